"""The training entry point: exact resume after an interruption, and DDP equal to one process."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dir7.train as train_module
from dir7.checkpoint import save_state_dict
from dir7.model import DIR7Model
from dir7.train import TrainConfig, parse_args, train
from tests.helpers import REPO, subprocess_env

TINY = ["dim=64", "depth=2", "head_size=16", "conv_channels=16", "patch_size=4",
        "decay_lora=8", "iclr_lora=8", "value_lora=4", "gate_lora=16"]
ROOT = REPO


def tiny_run(out: Path, **overrides) -> TrainConfig:
    base = dict(out=str(out), steps=6, batch_size=4, model_overrides=TINY, lr=1e-3, warmup=2, log_every=2,
                save_every=3, sample_every=0, workers=0, device="cpu")
    return TrainConfig(**{**base, **overrides})


def tensors(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(ckpt.glob(f"{prefix}*.safetensors")):
        out.update(load_file(str(f)))
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = True):
    assert a.keys() == b.keys() and a
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name


def train_until_crash(tc: TrainConfig, step: int, monkeypatch) -> None:
    """Run ``tc`` and kill it inside ``step`` (after its backward, before its EMA update)."""
    calls = {"n": 0}
    real_update = train_module.update_ema

    def crashing_update(*args):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt("simulated crash")
        real_update(*args)

    with monkeypatch.context() as m:
        m.setattr(train_module, "update_ema", crashing_update)
        with pytest.raises(KeyboardInterrupt):
            train(tc)


@pytest.mark.slow
def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    full = train(tiny_run(tmp_path / "full"))

    # crash in the middle of step 5: the last checkpoint is step 3's
    train_until_crash(tiny_run(tmp_path / "resumed"), 5, monkeypatch)
    resumed = train(tiny_run(tmp_path / "resumed"))  # same command again: picks up at step 3

    for prefix in ("model", "optimizer", "rng"):
        assert_same(tensors(full, prefix), tensors(resumed, prefix))
    assert_same(tensors(full / "ema", "model"), tensors(resumed / "ema", "model"))
    # the steps redone after the crash are logged once, as in the uninterrupted run
    def logged(run):
        return [json.loads(line)["step"] for line in (run.parent / "log.jsonl").read_text().splitlines()]
    assert logged(resumed) == logged(full) == [2, 4, 6]
    # the EMA checkpoint is a pipeline checkpoint
    pipe = dir7_pipeline(resumed / "ema")
    assert pipe.model.config.dim == 64


def dir7_pipeline(path):
    import dir7

    return dir7.DIR7Pipeline.from_pretrained(path)


def test_cli_parses_into_the_config():
    tc = parse_args(["--out", "x", "--steps", "10", "--set", "depth=3", "--set", "cross_mode=paper", "--lr", "2e-4"])
    assert (tc.out, tc.steps, tc.model_overrides, tc.lr) == ("x", 10, ["depth=3", "cross_mode=paper"], 2e-4)
    cfg = tc.model_config()
    assert cfg.depth == 3 and cfg.cross_mode == "paper"
    # a training preset gives the defaults, flags still win
    tc = parse_args(["--train-preset", "shapes", "--steps", "7"])
    assert (tc.snr_gamma, tc.batch_size, tc.steps) == (5.0, 512, 7)
    assert parse_args([]) == TrainConfig.from_preset("default")
    with pytest.raises(SystemExit):
        parse_args(["--train-preset", "fastest"])
    with pytest.raises(ValueError, match="model override"):
        TrainConfig(model_overrides=["depthh=3"]).model_config()
    # a tuple field takes a comma-separated list (continuing a grown model needs its scan orders)
    cfg = TrainConfig(model_overrides=["depth=3", "scan_orders=row, col_reverse,row"]).model_config()
    assert cfg.scan_orders == ("row", "col_reverse", "row")
    with pytest.raises(ValueError, match="scan_orders"):
        TrainConfig(model_overrides=["scan_orders=row,diagonal"]).model_config()
    for bad in ("depth=abc", "pooled_text"):  # errors name the override
        with pytest.raises(ValueError, match=f"model override '{bad}'"):
            TrainConfig(model_overrides=[bad]).model_config()
    with pytest.raises(SystemExit):
        parse_args(["--precision", "fp8"])
    assert parse_args(["--compile"]).compile and not parse_args(["--no-compile"]).compile
    assert not parse_args([]).compile


def test_kind_weights_change_the_scene_mix_and_bad_ones_fail_clearly():
    from dir7.data import DEFAULT_KIND_WEIGHTS

    tc = parse_args(["--kind-weights", "counting=3, single_object=0"])
    weights = tc.scene_kind_weights()
    assert weights["counting"] == 3.0 and weights["single_object"] == 0.0
    assert {k: v for k, v in weights.items() if k not in ("counting", "single_object")} == {
        k: v for k, v in DEFAULT_KIND_WEIGHTS.items() if k not in ("counting", "single_object")}
    assert TrainConfig().scene_kind_weights() == DEFAULT_KIND_WEIGHTS
    # the loader draws only the kinds left with weight
    only = ",".join(f"{k}={float(k == 'position')}" for k in DEFAULT_KIND_WEIGHTS)
    loader = train_module.make_loader(TrainConfig(kind_weights=only, workers=0, batch_size=8), 64, 0, 0, 1)
    assert {loader.dataset.sample(i).scene.kind for i in range(20)} == {"position"}
    bad_items = (("countin=2", "kind=weight"), ("counting", "kind=weight"), ("counting=lots", "not a number"),
                 ("counting=-1", ">= 0"), ("counting=nan", ">= 0"), (only.replace("=1.0", "=0"), "no scene kind"))
    for bad, match in bad_items:
        with pytest.raises(ValueError, match=match):
            TrainConfig(kind_weights=bad).scene_kind_weights()
    with pytest.raises(ValueError, match="folder"):
        train(TrainConfig(kind_weights="counting=2", data="/nonexistent", device="cpu"))


def test_snr_gamma_is_a_training_option_and_must_not_be_negative():
    assert parse_args(["--snr-gamma", "5"]).snr_gamma == 5.0 and TrainConfig().snr_gamma == 0.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="snr_gamma"):
            train(TrainConfig(snr_gamma=bad, device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("device", [
    "cpu",  # gloo
    pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (NCCL)")),
])
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path, device):
    # --time-limit-min: the ranks agree on when to stop by an all-reduce (NCCL only reduces
    # tensors on the GPU: a CPU tensor there crashed the first two-GPU run)
    # 10 steps: with DDP the ranks reduce the time-limit flag every 10th step
    common = ["--steps", "10", "--batch-size", "4", "--lr", "1e-3", "--warmup", "1", "--save-every", "10",
              "--sample-every", "0", "--workers", "0", "--device", device, "--log-every", "1",
              "--time-limit-min", "60", "--precision", "fp32"]
    for item in TINY:
        common += ["--set", item]
    # NVIDIA_TF32_OVERRIDE=0: cuDNN would otherwise run the fp32 stem convolution in TF32
    env = subprocess_env(OMP_NUM_THREADS="1", NVIDIA_TF32_OVERRIDE="0")
    subprocess.run([sys.executable, "-m", "dir7.train", "--out", str(tmp_path / "one"), *common],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "dir7.train", "--out", str(tmp_path / "two"), *common],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    one, two = tmp_path / "one" / "checkpoint", tmp_path / "two" / "checkpoint"
    # gradients are averaged in a different order: equal up to float rounding
    assert_same(tensors(one, "model"), tensors(two, "model"), exact=False)
    assert_same(tensors(one / "ema", "model"), tensors(two / "ema", "model"), exact=False)
    log_one = (tmp_path / "one" / "log.jsonl").read_text().splitlines()
    log_two = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(log_one) == len(log_two) == 10


def test_a_finite_folder_becomes_a_deterministic_endless_stream():
    from dir7.train import EndlessShuffle

    data = list(range(7))
    stream = EndlessShuffle(data, seed=3)
    first = [stream[j] for j in range(21)]
    for epoch in range(3):  # every epoch visits every item once
        assert sorted(first[7 * epoch : 7 * epoch + 7]) == data
    assert first[:7] != first[7:14]  # a new order each epoch
    again = EndlessShuffle(data, seed=3)
    assert [again[j] for j in reversed(range(21))][::-1] == first  # any access order, same stream


def test_init_from_starts_a_new_run_from_saved_weights_in_any_float_dtype(tmp_path):
    first = train(tiny_run(tmp_path / "first", steps=2))
    # carry the weights the way a size-limited transfer does: half precision, no optimizer state
    half = tmp_path / "half"
    (half / "ema").mkdir(parents=True)
    (half / "train_state.json").write_text((first / "train_state.json").read_text())
    (half / "ema" / "config.json").write_text((first / "ema" / "config.json").read_text())
    for src, dst, prefix in ((first, half, "model"), (first / "ema", half / "ema", "model")):
        save_state_dict({k: v.half() for k, v in tensors(src, prefix).items()}, dst, prefix=prefix)

    model, ema = (DIR7Model(tiny_run(tmp_path).model_config()) for _ in range(2))
    train_module.load_initial_weights(half, model, ema)
    for name, value in tensors(first, "model").items():
        torch.testing.assert_close(model.state_dict()[name], value.half().float())
    for name, value in tensors(first / "ema", "model").items():
        torch.testing.assert_close(ema.state_dict()[name], value.half().float())

    # a pipeline checkpoint (the EMA directory) seeds both the model and its EMA
    train_module.load_initial_weights(first / "ema", model, ema)
    assert_same(model.state_dict(), ema.state_dict())

    # the new run starts at step 0 from those weights and trains on, keeping the sampling
    # defaults tuned for them (also when they come from a config.json of the older layout)
    tuned = {"sampler": "ddim", "num_inference_steps": 17, "guidance_scale": 1.75, "guidance_interval": None}
    (first / "ema" / "pipeline_config.json").write_text(json.dumps(tuned))
    second = train(tiny_run(tmp_path / "second", steps=1, init_from=str(first)))
    assert json.loads((second / "train_state.json").read_text())["step"] == 1
    assert json.loads((second / "ema" / "pipeline_config.json").read_text()) == tuned
    (first / "ema" / "pipeline_config.json").unlink()
    legacy = {**json.loads((first / "ema" / "config.json").read_text()), "default_guidance": 3.0, "notes": {}}
    (first / "ema" / "config.json").write_text(json.dumps(legacy))
    third = train(tiny_run(tmp_path / "third", steps=1, init_from=str(first)))
    assert json.loads((third / "ema" / "pipeline_config.json").read_text())["guidance_scale"] == 3.0

    # a model that differs in meaning, not only in shape, is refused by name
    with pytest.raises(ValueError, match="cross_mode"):
        paper = DIR7Model(tiny_run(tmp_path, model_overrides=[*TINY, "cross_mode=paper"]).model_config())
        train_module.load_initial_weights(first, paper, copy.deepcopy(paper))
    with pytest.raises(FileNotFoundError, match="neither a training checkpoint"):
        train_module.load_initial_weights(tmp_path, model, ema)


def test_device_bundle_halves_a_pipeline_checkpoint_for_init_from(tmp_path):
    first = train(tiny_run(tmp_path / "first", steps=1))
    env = subprocess_env()
    bundle = [sys.executable, "-m", "scripts.device_bundle", "weights"]
    subprocess.run([*bundle, str(first / "ema"), str(tmp_path / "half")], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    half = tensors(tmp_path / "half", "model")
    assert half and all(v.dtype == torch.float16 for v in half.values())
    for name in ("config.json", "vocabulary.txt"):  # the files beside the weights travel as they are
        assert (tmp_path / "half" / name).read_text() == (first / "ema" / name).read_text()
    model, ema = (DIR7Model(tiny_run(tmp_path).model_config()) for _ in range(2))
    train_module.load_initial_weights(tmp_path / "half", model, ema)
    for name, value in tensors(first / "ema", "model").items():
        torch.testing.assert_close(model.state_dict()[name], value.half().float())
    bad = subprocess.run([*bundle, str(tmp_path), str(tmp_path / "x")], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "neither a training checkpoint" in bad.stderr


def test_a_warm_start_may_switch_pooled_text_on_and_computes_what_its_source_did(tmp_path):
    first = train(tiny_run(tmp_path / "first", steps=2))
    grown_cfg = tiny_run(tmp_path, model_overrides=[*TINY, "pooled_text=true"]).model_config()
    assert grown_cfg.pooled_text
    source = DIR7Model(tiny_run(tmp_path).model_config())
    train_module.load_initial_weights(first / "ema", source, copy.deepcopy(source))
    for init_from in (first, first / "ema"):  # a training checkpoint and a pipeline checkpoint
        grown = DIR7Model(grown_cfg)
        grown_ema = copy.deepcopy(grown)
        train_module.load_initial_weights(init_from, grown, grown_ema)
        x, t, text = torch.randn(2, 3, 64, 64), torch.tensor([3, 600]), torch.randn(2, 5, grown_cfg.text_dim)
        with torch.no_grad():
            assert torch.equal(grown_ema(x, t, text), source(x, t, text))
    # and trains on with the new path, which then learns
    second = train(tiny_run(tmp_path / "second", steps=2, init_from=str(first),
                            model_overrides=[*TINY, "pooled_text=true"]))
    assert json.loads((second / "ema" / "config.json").read_text())["pooled_text"] is True
    assert torch.count_nonzero(tensors(second, "model")["text_pool.2.weight"]) > 0
    # switching a path off would drop trained weights: refused by name
    with pytest.raises(ValueError, match="pooled_text"):
        train_module.load_initial_weights(second, source, copy.deepcopy(source))


def test_a_warm_start_may_grow_the_model_deeper_and_resumes_at_its_new_depth(tmp_path):
    first = train(tiny_run(tmp_path / "first", steps=2))
    source = DIR7Model(tiny_run(tmp_path).model_config())
    train_module.load_initial_weights(first / "ema", source, copy.deepcopy(source))
    # at lr 0 the grown run's weights stay where growing put them: the source's function
    frozen = train(tiny_run(tmp_path / "frozen", steps=1, lr=0.0, warmup=0, init_from=str(first / "ema"),
                            grow_depth=2))
    grown = dir7_pipeline(frozen / "ema").model
    assert grown.config.depth == 4
    x, t, text = torch.randn(2, 3, 64, 64), torch.tensor([3, 600]), torch.randn(2, 5, grown.config.text_dim)
    with torch.no_grad():
        assert torch.equal(grown(x, t, text), source(x, t, text))
    # an interrupted grown run, rerun with the same command, resumes at its grown depth exactly
    run = dict(steps=4, save_every=2, init_from=str(first), grow_depth=2)
    full = train(tiny_run(tmp_path / "full", **run))
    train(tiny_run(tmp_path / "resumed", max_steps_this_run=2, **run))
    resumed = train(tiny_run(tmp_path / "resumed", **run))
    for prefix in ("model", "optimizer"):
        assert_same(tensors(full, prefix), tensors(resumed, prefix))
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny_run(tmp_path / "nothing", grow_depth=2))
    with pytest.raises(ValueError, match="even number"):
        train(tiny_run(tmp_path / "odd", init_from=str(first), grow_depth=1))


@pytest.mark.slow
def test_padding_captions_to_a_longer_multiple_does_not_change_training(tmp_path):
    """--text-pad-multiple only fixes the padded text length (one compile for a compiled
    model); the padding is masked, so the run itself is the same."""
    short = train(tiny_run(tmp_path / "p16", steps=2, save_every=2))
    long = train(tiny_run(tmp_path / "p48", steps=2, save_every=2, text_pad_multiple=48))
    assert_same(tensors(short, "model"), tensors(long, "model"), exact=False)
    with pytest.raises(ValueError, match="text_pad_multiple"):
        train(tiny_run(tmp_path / "p0", text_pad_multiple=0))


def test_stop_step_ends_the_run_at_that_step_however_often_it_is_rerun(tmp_path, monkeypatch):
    # log_every=1: the log says which steps ran; a cosine schedule, so the lr tells which schedule
    run = dict(stop_step=4, log_every=1, save_every=2, lr_schedule="cosine")
    # killed inside step 4: steps 1-3 are logged, the last checkpoint is step 2's
    train_until_crash(tiny_run(tmp_path / "r", **run), 4, monkeypatch)
    train(tiny_run(tmp_path / "r", **run))  # resumes at step 2, redoes 3, stops after 4
    train(tiny_run(tmp_path / "r", **run))  # already there: trains nothing
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # step 3 once: its first record was dropped
    state = json.loads((tmp_path / "r" / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 4
    # the schedule is still the one of steps=6: step 4 is not the end of the cosine/warm-up
    assert log[-1]["lr"] == pytest.approx(train_module.lr_at(tiny_run(tmp_path / "r", **run), 3))


def test_trim_log_keeps_the_steps_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 2}\n{"step": 4}\n\n{"step": 6}\n{"step": 8, "lo')  # killed mid-write
    train_module.trim_log(log, 4)
    assert log.read_text() == '{"step": 2}\n{"step": 4}\n'
    log.write_text('{"step": 2}')  # nothing to drop, but the next line must not be appended to this one
    train_module.trim_log(log, 2)
    assert log.read_text() == '{"step": 2}\n'
    train_module.trim_log(tmp_path / "none.jsonl", 3)  # a new run has no log yet
    assert not (tmp_path / "none.jsonl").exists()


def test_to_device_leaves_cpu_tensors_and_copies_to_a_gpu_from_pinned_memory():
    from dir7.runtime import to_device

    x = torch.arange(6.0)
    assert to_device(x, "cpu") is x
    if torch.cuda.is_available():
        y = to_device(x, "cuda")
        assert y.is_cuda and torch.equal(y.cpu(), x)
        assert to_device(y, "cuda") is y
