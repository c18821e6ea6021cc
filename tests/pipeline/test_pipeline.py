"""Sampling, guidance, determinism, streaming, checkpoints and input checking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dir7
from dir7.checkpoint import MAX_SHARD_BYTES
from tests.helpers import randomize_zero_inits, tiny_config


@pytest.fixture(scope="module")
def pipe(text_encoder):
    torch.manual_seed(0)
    return dir7.DIR7Pipeline(randomize_zero_inits(dir7.DIR7Model(tiny_config()), std=0.3), text_encoder)


def pixels(image):
    return np.asarray(image)


@pytest.mark.parametrize("sampler", dir7.SAMPLERS)
def test_every_sampler_gives_images_and_state_stats(pipe, sampler):
    out = pipe(["a red circle", "two blue stars"], num_inference_steps=3, seed=1, sampler=sampler,
               num_images_per_prompt=2)
    assert len(out.images) == 4 and out.images[0].size == (16, 16) and out.images[0].mode == "RGB"
    cfg = pipe.model.config
    assert out.state_stats.rms.shape == (3, 4, cfg.depth, cfg.n_heads)
    assert out.state_stats.stable_rank.shape == (3, 4, cfg.depth, cfg.n_heads)
    srank = out.state_stats.stable_rank
    assert (srank >= 1 - 1e-4).all() and (srank <= cfg.head_size + 1e-4).all()
    assert len(out.state_stats.timesteps) == 3


def test_same_seed_same_image_other_seed_other_image(pipe):
    a = pipe("a red circle", num_inference_steps=3, seed=7, sampler="ddpm")
    b = pipe("a red circle", num_inference_steps=3, seed=7, sampler="ddpm")
    c = pipe("a red circle", num_inference_steps=3, seed=8, sampler="ddpm")
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert torch.equal(a.state_stats.rms, b.state_stats.rms)
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))


def test_random_seed_is_reported_and_reproduces(pipe):
    out = pipe("a red circle", num_inference_steps=2, seed=None)
    again = pipe("a red circle", num_inference_steps=2, seed=out.seed)
    assert np.array_equal(pixels(out.images[0]), pixels(again.images[0]))


def test_guidance_changes_the_image_and_scale_one_skips_the_unconditional_branch(pipe, monkeypatch):
    batches = []
    forward = pipe.model.forward

    def spy(x, *args, **kwargs):
        batches.append(x.shape[0])
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", spy)
    g1 = pipe("a red circle", num_inference_steps=6, guidance_scale=1.0, seed=3, sampler="ddim")
    assert set(batches) == {1}
    batches.clear()
    g4 = pipe("a red circle", num_inference_steps=6, guidance_scale=4.0, seed=3, sampler="ddim")
    assert set(batches) == {2}
    assert not np.array_equal(pixels(g1.images[0]), pixels(g4.images[0]))


def test_guidance_interval_guides_only_inside_it(pipe, monkeypatch):
    calls = []  # (timestep, batch) of every model call
    forward = pipe.model.forward

    def spy(x, t, *args, **kwargs):
        calls.append((int(t[0]), x.shape[0]))
        return forward(x, t, *args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", spy)
    kw = dict(num_inference_steps=6, guidance_scale=4.0, seed=3, sampler="dpm++")
    every = pipe("a red circle", **kw)
    steps = [t for t, _ in calls]
    calls.clear()
    lo, hi = steps[4], steps[1]  # guide at the 2nd-5th of the 6 steps
    part = pipe("a red circle", guidance_interval=(lo, hi), **kw)
    assert calls == [(t, 2 if lo <= t <= hi else 1) for t in steps]
    assert not torch.equal(part.state_stats.rms, every.state_stats.rms)  # (a random model's pixels saturate)
    # the whole range is the same as no interval, bit for bit
    whole = pipe("a red circle", guidance_interval=(0, pipe.model.config.num_train_timesteps - 1), **kw)
    assert np.array_equal(pixels(whole.images[0]), pixels(every.images[0]))
    assert torch.equal(whole.state_stats.rms, every.state_stats.rms)
    # an interval that holds no step samples what guidance 1 does: the conditional branch alone,
    # even though the prompt is padded to the (longer) negative prompt's length for the guided steps
    monkeypatch.setattr(pipe.model, "forward", forward)
    neg = "a long negative prompt with many more tokens than the prompt has"
    none = pipe("a red circle", negative_prompt=neg, guidance_interval=(steps[1] + 1, steps[0] - 1), **kw)
    plain = pipe("a red circle", **{**kw, "guidance_scale": 1.0})
    assert np.abs(pixels(none.images[0]).astype(int) - pixels(plain.images[0]).astype(int)).max() <= 1


def test_the_pipeline_config_s_guidance_interval_is_used_saved_and_checked(pipe, tmp_path, monkeypatch):
    assert pipe.config.guidance_interval is None  # the default: guide every step
    monkeypatch.setattr(pipe, "config", dir7.PipelineConfig(guidance_interval=[400, 999]))  # JSON gives a list
    assert pipe.config.guidance_interval == (400, 999)
    default = pipe("a star", num_inference_steps=4, guidance_scale=3.0, seed=2)
    explicit = pipe("a star", num_inference_steps=4, guidance_scale=3.0, seed=2, guidance_interval=(400, 999))
    assert np.array_equal(pixels(default.images[0]), pixels(explicit.images[0]))
    assert pipe.info["sampling"]["guidance_interval"] == [400, 999]
    pipe.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "pipeline_config.json").read_text())["guidance_interval"] == [400, 999]
    assert "guidance_interval" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert dir7.load_configs(tmp_path / "m")[1] == pipe.config
    for bad in [(500, 400), (-1, 10), (0, 1000), (0.5, 10), (True, 10), (1, 2, 3), "0,999"]:
        with pytest.raises(ValueError, match="guidance interval"):
            pipe.check_inputs("a star", guidance_interval=bad)
        if bad != (0, 1000):  # beyond the model's schedule: only a model can tell
            with pytest.raises(ValueError, match="guidance interval"):
                dir7.PipelineConfig(guidance_interval=bad)
    with pytest.raises(ValueError, match="guidance interval"):
        dir7.DIR7Pipeline(pipe.model, pipe.text_encoder, dir7.PipelineConfig(guidance_interval=(0, 1000)))


def test_a_legacy_config_json_still_loads_with_its_sampling_defaults(pipe, tmp_path):
    """config.json written before pipeline_config.json existed held the sampling defaults, the
    training's text dropout and free-form notes: they map to the PipelineConfig or are dropped."""
    pipe.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "pipeline_config.json").unlink()
    legacy = {**pipe.model.config.to_dict(), "text_dropout": 0.1, "notes": {"status": "stage 3"},
              "default_sampler": "ddim", "default_steps": 17, "default_guidance": 3.5,
              "default_guidance_interval": [300, 999]}
    (tmp_path / "m" / "config.json").write_text(json.dumps(legacy))
    loaded = dir7.DIR7Pipeline.from_pretrained(tmp_path / "m", text_encoder=pipe.text_encoder)
    assert loaded.model.config == pipe.model.config
    assert loaded.config == dir7.PipelineConfig(sampler="ddim", num_inference_steps=17, guidance_scale=3.5,
                                                guidance_interval=(300, 999))
    a = loaded("a star", num_inference_steps=3, seed=1, stats=False).images[0]
    b = pipe("a star", num_inference_steps=3, seed=1, stats=False, sampler="ddim", guidance_scale=3.5,
             guidance_interval=(300, 999)).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    # without the legacy keys and without pipeline_config.json: the defaults
    (tmp_path / "m" / "config.json").write_text(json.dumps(pipe.model.config.to_dict()))
    assert dir7.load_configs(tmp_path / "m")[1] == dir7.PipelineConfig()


def test_pipeline_config_presets_and_bad_values():
    assert dir7.PipelineConfig.from_preset("ddim-50").num_inference_steps == 50
    assert set(dir7.PIPELINE_PRESETS) >= {"dpm++-25", "ddim-50", "ddpm-250"}
    with pytest.raises(ValueError, match="unknown pipeline preset"):
        dir7.PipelineConfig.from_preset("fast")
    for bad in [{"sampler": "euler"}, {"num_inference_steps": 0}, {"num_inference_steps": 2.5},
                {"guidance_scale": float("nan")}, {"guidance_scale": -1}]:
        with pytest.raises(ValueError):
            dir7.PipelineConfig(**bad)
    with pytest.raises(ValueError, match="unknown PipelineConfig field"):
        dir7.PipelineConfig.from_dict({"steps": 25})


def test_sampling_without_stats_gives_the_same_images(pipe):
    kw = dict(num_inference_steps=4, guidance_scale=3.0, seed=4, num_images_per_prompt=2)
    full = pipe(["a red circle", "two stars"], **kw)
    bare = pipe(["a red circle", "two stars"], stats=False, **kw)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(full.images, bare.images))
    assert full.state_stats.rms.shape[0] == 4 and bare.state_stats.rms.numel() == 0
    events = list(pipe.steps("a star", stats=False, **kw))
    assert all(e.preview == [] and e.state_rms.numel() == 0 for e in events) and len(events[-1].images) == 2


@pytest.mark.slow
def test_a_compiled_pipeline_samples_the_eager_images_and_keeps_the_states_path_eager(text_encoder):
    torch.manual_seed(0)
    model = randomize_zero_inits(dir7.DIR7Model(tiny_config()), std=0.3)
    eager = dir7.DIR7Pipeline(model, text_encoder)
    compiled = dir7.DIR7Pipeline(model, text_encoder).compile()
    kw = dict(num_inference_steps=2, guidance_scale=3.0, seed=2, stats=False)
    a, b = eager("a red circle", **kw).images[0], compiled("a red circle", **kw).images[0]
    # fused kernels reorder sums: pixels may differ by a rounding step, no more
    assert np.abs(pixels(a).astype(int) - pixels(b).astype(int)).max() <= 2
    calls = []
    compiled._compiled = lambda *args, **kwargs: calls.append(1) or model(*args, **kwargs)
    with_stats = compiled("a red circle", num_inference_steps=2, seed=2)  # the plots need the states: eager
    assert not calls and with_stats.state_stats.rms.shape[0] == 2
    compiled("a red circle", **kw)
    assert calls  # and without them the compiled network runs


def test_callback_and_streaming_steps_agree(pipe):
    seen = []
    out = pipe("a star", num_inference_steps=4, seed=5, callback=lambda i, n, info: seen.append((i, n, info)))
    assert [(i, n) for i, n, _ in seen] == [(i, 4) for i in range(4)]
    assert set(seen[0][2]) == {"timestep", "preview", "state_rms", "stable_rank"}
    events = list(pipe.steps("a star", num_inference_steps=4, seed=5))
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert all(e.images is None for e in events[:-1])
    assert np.array_equal(pixels(events[-1].images[0]), pixels(out.images[0]))
    assert events[0].timestep > events[-1].timestep
    assert events[0].preview[0].size == (16, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "empty"),
        ({"prompt": ""}, "empty"),
        ({"prompt": 3}, "string"),
        ({"num_inference_steps": 0}, "Steps"),
        ({"num_inference_steps": 2.5}, "Steps"),
        ({"num_inference_steps": 5000}, "Steps"),
        ({"guidance_scale": -1.0}, "Guidance"),
        ({"guidance_scale": float("nan")}, "Guidance"),
        ({"guidance_scale": 99.0}, "Guidance"),
        ({"seed": -1}, "Seed"),
        ({"seed": 2**40}, "Seed"),
        ({"seed": 1.5}, "Seed"),
        ({"seed": True}, "Seed"),
        ({"sampler": "euler-magic"}, "sampler"),
        ({"negative_prompt": ["a", "b"]}, "negative prompts"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(pipe, kwargs, message):
    args = {"prompt": "a red circle", "num_inference_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**args)


def test_save_load_round_trip_gives_identical_outputs(pipe, tmp_path, text_encoder):
    path = pipe.save_pretrained(tmp_path / "ckpt")
    loaded = dir7.DIR7Pipeline.from_pretrained(path, text_encoder=text_encoder)
    assert loaded.trained and loaded.model.config == pipe.model.config
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), torch.randn(2, 5, 384)
    with torch.no_grad():
        assert torch.equal(loaded.model(x, t, text), pipe.model(x, t, text))
    a = pipe("a red circle", num_inference_steps=2, seed=1)
    b = loaded("a red circle", num_inference_steps=2, seed=1)
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    # saving again over an existing checkpoint replaces it whole
    pipe.save_pretrained(path)
    assert dir7.DIR7Pipeline.from_pretrained(path, text_encoder=text_encoder).model.config == pipe.model.config


def test_shards_stay_under_16_mib_and_no_pickle(tmp_path, text_encoder):
    pipe = dir7.DIR7Pipeline(dir7.DIR7Model(dir7.DIR7Config.from_preset("dir7-demo")), text_encoder)
    path = pipe.save_pretrained(tmp_path / "demo")
    shards = sorted(path.glob("*.safetensors"))
    assert len(shards) >= 2
    # tensors are packed up to MAX_SHARD_BYTES; the safetensors header comes on top
    assert MAX_SHARD_BYTES < 16 * 1024 * 1024
    assert all(s.stat().st_size < 16 * 1024 * 1024 for s in shards)
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}


def test_checkpoint_errors_name_the_file(pipe, tmp_path, text_encoder):
    path = pipe.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        dir7.DIR7Pipeline.from_pretrained(tmp_path / "empty", text_encoder=text_encoder)

    shard = sorted(path.glob("*.safetensors"))[0]
    shard.rename(tmp_path / "moved")
    with pytest.raises(dir7.CheckpointError, match=shard.name):
        dir7.DIR7Pipeline.from_pretrained(path, text_encoder=text_encoder)
    (tmp_path / "moved").rename(shard)

    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "conv_channels": 8}))
    with pytest.raises(dir7.CheckpointError, match=r"model[-\d\w]*\.safetensors: tensor"):
        dir7.DIR7Pipeline.from_pretrained(path, text_encoder=text_encoder)

    (path / "config.json").write_text(json.dumps({**config, "depthh": 2}))
    with pytest.raises(dir7.CheckpointError, match=r"config\.json"):
        dir7.DIR7Pipeline.from_pretrained(path, text_encoder=text_encoder)


def test_text_encoder_width_must_match_the_model(text_encoder):
    with pytest.raises(ValueError, match="text_dim"):
        dir7.DIR7Pipeline(dir7.DIR7Model(tiny_config(text_dim=32)), text_encoder)


def test_pipeline_info_marks_untrained_models(pipe):
    assert pipe.info["trained"] is False and pipe.info["params"] == pipe.model.num_parameters()


def test_keep_freed_memory_applies_on_glibc_and_is_a_no_op_elsewhere():
    import platform
    import subprocess
    import sys

    # in a child: the setting is process-wide, and the test process should not carry it
    out = subprocess.run([sys.executable, "-c", "import dir7; print(dir7.keep_freed_memory())"],
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out == str(glibc)
