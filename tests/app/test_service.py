"""Unit tests of the demo's service layer, streaming handler and figures (CPU, tiny random model)."""

from __future__ import annotations

import json
import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network from tests

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

import dir7
from app import service as service_mod
from app.plots import heatmap_figure, heatmap_spec, to_json, trajectory_figure, trajectory_spec
from app.service import CHECKPOINTS_DIR, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, DemoService, InputError, ModelRegistry
from app.ui import MODEL_VIEW, build_demo, make_generate_handler, make_model_handler, model_view
from tests.helpers import REPO, tiny_config


def tiny_pipeline(text_encoder) -> dir7.DIR7Pipeline:
    cfg = tiny_config(patch_size=4)
    return dir7.DIR7Pipeline.from_config(cfg, text_encoder=text_encoder)


@pytest.fixture(scope="module")
def service(tmp_path_factory, text_encoder) -> DemoService:
    return DemoService(
        tiny_pipeline(text_encoder), fallback_reason="test model", tmp_dir=tmp_path_factory.mktemp("pngs")
    )


def _long_prompt(svc: DemoService) -> str:
    words = "a red circle left of a blue square and".split()
    prompt = ""
    i = 0
    while svc.encoder.count_tokens(prompt) <= svc.max_tokens:
        prompt += words[i % len(words)] + " "
        i += 1
    return prompt.strip()


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# ---- validation ------------------------------------------------------------------------------


def test_valid_inputs_are_coerced_to_a_typed_request(service):
    request, notices = service.validate("a red circle", "", 12.0, "3.5", "ddim", "42", False)
    assert request.prompt == "a red circle"
    assert request.negative_prompt is None  # an empty negative prompt means none
    assert request.num_inference_steps == 12 and isinstance(request.num_inference_steps, int)
    assert request.guidance_scale == 3.5
    assert request.seed == 42 and isinstance(request.seed, int)
    assert request.sampler == "ddim"
    assert notices == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt": ""}, "enter a prompt"),
        ({"prompt": "   \n\t"}, "enter a prompt"),
        ({"prompt": None}, "must be text"),
        ({"prompt": 12}, "must be text"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "characters long"),
        ({"negative_prompt": ["a"]}, "must be text"),
        ({"num_inference_steps": 0}, "Steps"),
        ({"num_inference_steps": MAX_STEPS + 1}, "Steps"),
        ({"num_inference_steps": 2.5}, "whole number"),
        ({"num_inference_steps": "many"}, "Steps must be a number"),
        ({"num_inference_steps": True}, "Steps must be a number"),
        ({"guidance_scale": -0.5}, "Guidance scale"),
        ({"guidance_scale": 20.5}, "Guidance scale"),
        ({"guidance_scale": float("nan")}, "Guidance scale"),
        ({"guidance_scale": "inf"}, "Guidance scale"),
        ({"sampler": "euler"}, "Sampler must be one of"),
        ({"sampler": None}, "Sampler must be one of"),
        ({"seed": 1.5}, "whole number"),
        ({"seed": -1}, "whole number"),
        ({"seed": MAX_SEED + 1}, "whole number"),
        ({"seed": 10**40}, "whole number"),
        ({"seed": 1e300}, "whole number"),
        ({"seed": "abc"}, "Seed must be a number"),
        ({"seed": None}, "Seed is empty"),
        ({"seed": ""}, "Seed is empty"),
    ],
)
def test_bad_inputs_raise_a_readable_input_error(service, kwargs, fragment):
    args = {
        "prompt": "a red circle",
        "negative_prompt": None,
        "num_inference_steps": 4,
        "guidance_scale": 4.0,
        "sampler": "ddim",
        "seed": 0,
        "randomize_seed": False,
    }
    args.update(kwargs)
    with pytest.raises(InputError) as info:
        service.validate(**args)
    message = str(info.value)
    assert fragment in message
    assert "Traceback" not in message and len(message) < 300


def test_randomize_ignores_the_seed_box_and_reports_an_in_range_seed(service):
    seeds = {service.validate("a", None, 4, 4.0, "ddim", "not a number", True)[0].seed for _ in range(5)}
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert len(seeds) > 1  # five draws from 2**32 values


def test_prompt_over_the_token_limit_is_accepted_with_a_truncation_notice(service):
    prompt = _long_prompt(service)
    request, notices = service.validate(prompt, prompt, 4, 4.0, "ddim", 0, False)
    assert request.prompt == prompt  # the encoder truncates; the app only tells the user
    assert len(notices) == 2  # prompt and negative prompt
    assert all(str(service.max_tokens) in n and "ignored" in n for n in notices)


def test_prompt_at_the_token_limit_has_no_notice(service):
    assert service.validate("a red circle", None, 4, 4.0, "ddim", 0, False)[1] == []


# ---- sampling --------------------------------------------------------------------------------


def test_generate_streams_one_update_per_step_and_ends_with_the_image(service):
    request, _ = service.validate("a red circle", None, 5, 4.0, "ddim", 1, False)
    updates = list(service.generate(request))
    assert [u.step for u in updates] == [1, 2, 3, 4, 5]
    assert all(u.total == 5 for u in updates)
    assert [u.done for u in updates] == [False] * 4 + [True]
    cfg = service.pipe.model.config
    n_layers, n_heads = updates[0].rms.shape[1:]
    assert n_heads == cfg.dim // cfg.head_size and n_layers >= 1
    for k, u in enumerate(updates, start=1):
        assert u.rms.shape == u.stable_rank.shape == (k, n_layers, n_heads)
        assert np.isfinite(u.rms).all() and (u.stable_rank >= 1 - 1e-4).all()
        assert isinstance(u.preview, Image.Image) and u.preview.size == (cfg.image_size, cfg.image_size)
        assert len(u.timesteps) == k
    assert updates[-1].image.size == (cfg.image_size, cfg.image_size)
    assert service.active_generations == 0


def test_same_inputs_and_seed_give_the_same_image_and_another_seed_does_not(service):
    def final(seed):
        request, _ = service.validate("a blue star", "red", 4, 3.0, "dpm++", seed, False)
        return _pixels(list(service.generate(request))[-1].image)

    first, again, other = final(7), final(7), final(8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_should_stop_cancels_between_steps(service):
    request, _ = service.validate("a red circle", None, 50, 4.0, "ddim", 0, False)
    checks = []  # should_stop is asked once after every step
    updates = list(service.generate(request, should_stop=lambda: checks.append(1) or len(checks) >= 3))
    assert len(updates) == 3
    assert not updates[-1].done
    assert service.active_generations == 0


def test_closing_the_stream_stops_the_sampler(service, monkeypatch):
    """What Gradio does on Stop: it drops/closes the handler's generator. No further step may run."""
    ran = []
    original = service.pipe.steps

    def counting_steps(*args, **kwargs):
        for ev in original(*args, **kwargs):
            ran.append(ev.step)
            yield ev

    monkeypatch.setattr(service.pipe, "steps", counting_steps)
    request, _ = service.validate("a red circle", None, 100, 4.0, "ddim", 0, False)
    stream = service.generate(request)
    for _ in range(2):
        next(stream)
    assert service.active_generations == 1
    stream.close()
    assert ran == [0, 1]
    assert service.active_generations == 0


def test_save_png_writes_a_png_and_keeps_the_folder_bounded(service):
    request, _ = service.validate("a", None, 1, 4.0, "ddim", 3, False)
    paths = [service.save_png(Image.new("RGB", (8, 8), "red"), request) for _ in range(70)]
    assert Image.open(paths[-1]).format == "PNG"
    assert sum(p.exists() for p in paths) <= 64
    assert paths[-1].exists()


# ---- the Gradio handler, called directly -----------------------------------------------------


def test_handler_streams_figures_and_a_downloadable_png(service):
    handler = make_generate_handler(service, min_update_interval_s=0, figure_interval_s=0)
    outputs = list(handler("a red circle", "", 3, 4.0, "ddim", 5, False))
    assert len(outputs) == 1 + 3  # the "starting" update, then one per step
    first = outputs[0]
    assert first[2] == 5 and "seed 5" in first[1]  # the seed used is shown at once
    image, status, seed_used, traj, heat, png, model_used = outputs[-1]
    assert isinstance(image, Image.Image) and seed_used == 5 and model_used == service.name
    assert "Done" in status
    # figures go out as plotly JSON (valid figures, without the cost of building them)
    assert traj.type == heat.type == "plotly"
    go.Figure(json.loads(traj.plot)), go.Figure(json.loads(heat.plot))
    with Image.open(png) as f:
        assert f.format == "PNG"
        assert np.array_equal(np.asarray(f.convert("RGB")), _pixels(image))


def test_the_final_image_and_its_png_say_how_they_were_made(service):
    """The settings ride along as PNG text; they also make the final image's encoded bytes
    differ from the last preview's, so Gradio never rewrites a cache file the page may be reading."""
    from gradio.processing_utils import encode_pil_to_bytes

    handler = make_generate_handler(service, min_update_interval_s=0, figure_interval_s=0)
    outputs = list(handler("a red circle", "blurry", 3, 4.0, "ddim", 5, False))
    preview, final, png = outputs[-2][0], outputs[-1][0], outputs[-1][5]
    expected = {"prompt": "a red circle", "negative_prompt": "blurry", "seed": "5", "steps": "3",
                "guidance": "4", "guidance_interval": "all", "sampler": "ddim"}  # (the test model guides every step)
    with Image.open(png) as f:
        assert {k: f.text[k] for k in expected} == expected and f.text["model"]
    assert encode_pil_to_bytes(final) != encode_pil_to_bytes(preview)


@pytest.mark.parametrize(
    "args",
    [
        ("   ", "", 3, 4.0, "ddim", 0, False),
        ("ok", "", 0, 4.0, "ddim", 0, False),
        ("ok", "", 3, 99, "ddim", 0, False),
        ("ok", "", 3, 4.0, "ddim", 2**40, False),
        ("ok", "", 3, 4.0, "ddim", 0.25, False),
    ],
)
def test_handler_turns_bad_input_into_gr_error(service, args):
    with pytest.raises(gr.Error) as info:
        next(make_generate_handler(service, 0)(*args))
    assert "Traceback" not in str(info.value)


def test_handler_reports_truncation_in_the_status(service):
    # Outside a running app gr.Warning falls back to warnings.warn; in the page it is a toast.
    with pytest.warns(UserWarning, match="ignored"):
        outputs = list(make_generate_handler(service, 0)(_long_prompt(service), "", 2, 4.0, "ddim", 0, False))
    assert all("ignored" in o[1] for o in outputs)


def test_handler_hides_unexpected_failures_behind_a_short_message(service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("internal detail /secret/path")
        yield  # pragma: no cover

    monkeypatch.setattr(service.pipe, "steps", broken)
    stream = make_generate_handler(service, 0)("ok", "", 2, 4.0, "ddim", 0, False)
    next(stream)  # the "starting" update
    with pytest.raises(gr.Error) as info:
        next(stream)
    assert "/secret/path" not in str(info.value) and "try again" in str(info.value)


# ---- loading and labelling -------------------------------------------------------------------


def _blocks(demo: gr.Blocks, elem_id: str) -> list:
    return [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]


def test_without_any_model_a_labelled_untrained_model_stands_in(monkeypatch, tmp_path, text_encoder):
    monkeypatch.delenv("DIR7_CHECKPOINT", raising=False)
    monkeypatch.setattr(service_mod, "build_untrained_pipeline", lambda: tiny_pipeline(text_encoder))
    models = ModelRegistry.discover(device="cpu", root=tmp_path)  # a checkpoints/ folder with nothing in it
    svc = models.get()
    assert not svc.trained and models.names == [svc.name] and "untrained" in svc.name
    assert "UNTRAINED" in svc.capability() and "no trained checkpoint" in svc.capability()
    assert "random init" in svc.describe()
    with build_demo(models) as demo:  # the warning is the page's first line under the title
        line = _blocks(demo, "dir7-capability")
        assert line and "UNTRAINED" in line[0].value and "untrained" in line[0].elem_classes
        selector = _blocks(demo, "model")[0]  # one model: the selector names it, nothing to choose
        assert selector.value == svc.name and not selector.interactive


def test_an_explicit_missing_checkpoint_is_an_error_not_a_fallback(tmp_path, save_model, monkeypatch):
    with pytest.raises(FileNotFoundError):
        DemoService.load(checkpoint=str(tmp_path / "nope"), device="cpu")
    # checked at start-up for every model given, not only the default one that loads then
    good = save_model(tmp_path, "good", summary="Good.", cross_mode="attention")
    with pytest.raises(FileNotFoundError, match="nope"):
        ModelRegistry.discover([good, tmp_path / "nope"], device="cpu")
    monkeypatch.setenv("DIR7_CHECKPOINT", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        ModelRegistry.discover(device="cpu")


def test_a_saved_checkpoint_loads_as_trained(tmp_path, text_encoder):
    tiny_pipeline(text_encoder).save_pretrained(tmp_path / "ckpt")
    svc = DemoService.load(checkpoint=str(tmp_path / "ckpt"), device="cpu")
    assert svc.trained
    assert "UNTRAINED" not in svc.capability() + svc.describe()
    assert svc.defaults["sampler"] in svc.samplers
    assert svc.examples == [] and "no summary" in svc.capability()  # a model without a card


@pytest.fixture(scope="module")
def carded_service(tmp_path_factory, save_model) -> DemoService:
    """A model directory with a card (summary, examples) and a training vocabulary."""
    path = save_model(tmp_path_factory.mktemp("carded"), "tiny-squares", summary="Draws tiny test squares.",
                      examples=["a red square", "two blue squares"],
                      vocabulary="a red blue two square squares photo of".split())
    return DemoService.load(checkpoint=str(path), device="cpu")


def test_the_page_says_what_the_model_draws_and_where_its_card_is(carded_service, monkeypatch):
    line = carded_service.capability()
    assert "tiny-squares" in line and "Draws tiny test squares." in line
    assert str(carded_service.checkpoint_path / "README.md") in line  # outside the repository: its path
    assert carded_service.examples == ["a red square", "two blue squares"]
    with build_demo(carded_service) as demo:
        assert [b.value for b in _blocks(demo, "dir7-capability")] == [line]
    monkeypatch.setattr(carded_service, "checkpoint_path", REPO / "checkpoints" / "dir7-shapes")
    monkeypatch.delenv("DIR7_REPO_URL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert carded_service.card_location() == "checkpoints/dir7-shapes/README.md"
    monkeypatch.setenv("SPACE_ID", "someone/dir7")
    assert carded_service.card_location() == (
        "https://huggingface.co/spaces/someone/dir7/blob/main/checkpoints/dir7-shapes/README.md")
    assert f"[model card]({carded_service.card_location()})" in carded_service.capability()


def test_words_never_seen_in_training_get_a_notice_and_sampling_still_runs(carded_service):
    _, notices = carded_service.validate("a photo of a red square", None, 2, 2.0, "ddim", 0)
    assert notices == []
    request, notices = carded_service.validate("A photo of a Cat on a sofa, cat!", None, 2, 2.0, "ddim", 0)
    assert len(notices) == 1 and notices[0].startswith("Never seen in training: cat, on, sofa.")
    assert list(carded_service.generate(request))[-1].done  # a notice, not a refusal
    # the negative prompt is not checked: its words only steer away
    assert carded_service.validate("a red square", "a cat", 2, 2.0, "ddim", 0)[1] == []


def test_the_handler_streams_the_unknown_word_notice_before_the_first_step(carded_service):
    handler = make_generate_handler(carded_service, min_update_interval_s=0, figure_interval_s=0)
    first = next(handler("a giraffe", "", 2, 2.0, "ddim", 0, False))
    assert first[0] is None and "Starting" in first[1] and "Never seen in training: giraffe" in first[1]


def test_device_defaults_to_cpu_without_cuda_and_rejects_missing_cuda(monkeypatch):
    monkeypatch.setattr(service_mod.torch.cuda, "is_available", lambda: False)
    assert service_mod.resolve_device(None) == service_mod.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        service_mod.resolve_device("cuda")
    monkeypatch.setattr(service_mod.torch.cuda, "is_available", lambda: True)
    assert service_mod.resolve_device("auto") == "cuda"


def test_defaults_come_from_the_pipeline_config_within_ui_ranges(service, monkeypatch):
    sampling = service.pipe.config
    d = service.defaults
    assert d["num_inference_steps"] == min(sampling.num_inference_steps, MAX_STEPS)
    assert d["guidance_scale"] == sampling.guidance_scale and d["sampler"] == sampling.sampler
    monkeypatch.setattr(service.pipe, "config", dir7.PipelineConfig(sampler="ddim", num_inference_steps=900,
                                                                     guidance_scale=7.5))
    assert service.defaults == {"num_inference_steps": MAX_STEPS, "guidance_scale": 7.5, "sampler": "ddim",
                                "seed": 0}


def test_app_py_options():
    import app as app_pkg  # the package, not app.py: check the script separately

    assert hasattr(app_pkg, "build_demo")
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_script", REPO / "app.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse_args([])
    assert (args.host, args.port, args.share, args.checkpoint) == ("127.0.0.1", 7860, False, None)
    args = script.parse_args(["--host", "0.0.0.0", "--port", "9000", "--share", "--checkpoint", "ck"])
    assert (args.host, args.port, args.share, args.checkpoint) == ("0.0.0.0", 9000, True, ["ck"])
    assert script.parse_args(["--checkpoint", "a", "--checkpoint", "b"]).checkpoint == ["a", "b"]


# ---- the models on offer -------------------------------------------------------------------

CIRCLES = {"summary": "Draws tiny circles.", "examples": ["a red circle", "two circles"],
           "vocabulary": "a red two circle circles".split()}
SQUARES = {"summary": "Draws tiny squares.", "examples": ["a blue square"], "vocabulary": "a blue square".split(),
           "sampling": dir7.PipelineConfig(sampler="ddim", num_inference_steps=7, guidance_scale=1.5),
           "cross_mode": "attention"}


@pytest.fixture(scope="module")
def models(tmp_path_factory, save_model) -> ModelRegistry:
    """Two models side by side, as in checkpoints/: tiny-circles (CrossWKV state) and tiny-squares
    (softmax attention, other sampling defaults); loaded by the first test that uses them."""
    root = tmp_path_factory.mktemp("checkpoints")
    save_model(root, "tiny-circles", **CIRCLES)
    save_model(root, "tiny-squares", **SQUARES)
    return ModelRegistry.discover(device="cpu", root=root)


def _generate(handler, model, prompt="a red circle", steps=2, seed=3):
    return list(handler(prompt, "", steps, 2.0, "ddim", seed, False, model))


def test_the_repository_offers_its_shipped_models_with_shapes_first(monkeypatch):
    if not (CHECKPOINTS_DIR / "dir7-shapes" / "config.json").is_file():
        pytest.skip("the shipped model is not in this checkout")
    monkeypatch.delenv("DIR7_CHECKPOINT", raising=False)
    models = ModelRegistry.discover(device="cpu")
    assert models.default == models.names[0] == "dir7-shapes"
    assert "emoji-judge" not in models.names  # the evaluation's classifier is no model to sample
    assert all((CHECKPOINTS_DIR / name / "config.json").is_file() for name in models.names)
    assert not any(models.is_loaded(name) for name in models.names)  # discovering loads nothing


def test_discovery_offers_every_model_directory_or_exactly_those_asked_for(tmp_path, save_model, monkeypatch):
    monkeypatch.delenv("DIR7_CHECKPOINT", raising=False)
    b = save_model(tmp_path, "b-model", summary="B.", cross_mode="attention")
    a = save_model(tmp_path, "a-model", summary="A.", cross_mode="attention")
    (tmp_path / "judge").mkdir()  # a folder without config.json (like checkpoints/emoji-judge)
    (tmp_path / "judge" / "README.md").write_text("not a model")
    (tmp_path / "notes.txt").write_text("not a model")
    assert ModelRegistry.discover(device="cpu", root=tmp_path).names == ["a-model", "b-model"]
    assert ModelRegistry.discover([b, a], device="cpu", root=tmp_path).names == ["b-model", "a-model"]
    monkeypatch.setenv("DIR7_CHECKPOINT", str(b))
    assert ModelRegistry.discover(device="cpu", root=tmp_path).names == ["b-model"]


def test_models_with_the_same_directory_name_are_told_apart_without_their_server_path(tmp_path, save_model,
                                                                                      monkeypatch):
    paths = [save_model(tmp_path / run, "ema", summary=f"{run}.", cross_mode="attention") for run in ("r1", "r2")]
    assert ModelRegistry.discover(paths, device="cpu").names == ["r1/ema", "r2/ema"]  # not tmp_path/...
    with pytest.raises(ValueError, match="given twice"):
        ModelRegistry.discover([paths[0], tmp_path / "r1" / "." / "ema"], device="cpu")
    monkeypatch.chdir(paths[0])
    assert ModelRegistry.discover(["."], device="cpu").names == ["ema"]  # the folder's own name, not ""


def test_models_load_on_first_use_and_once_when_asked_for_at_the_same_time(tmp_path, save_model, monkeypatch):
    for name in ("tiny-a", "tiny-b"):
        save_model(tmp_path, name, summary=f"{name}.", cross_mode="attention")
    loads = []
    original = dir7.DIR7Pipeline.from_pretrained.__func__

    def slow_load(cls, path, *args, **kwargs):
        loads.append(path.name)
        time.sleep(0.3)  # long enough for every thread below to ask while the first one loads
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(dir7.DIR7Pipeline, "from_pretrained", classmethod(slow_load))
    models = ModelRegistry.discover(device="cpu", root=tmp_path)
    assert loads == [] and not models.is_loaded("tiny-b")
    barrier = threading.Barrier(4)
    got = []

    def ask():
        barrier.wait()
        got.append(models.get("tiny-b"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["tiny-b"] and len(got) == 4 and all(svc is got[0] for svc in got)
    assert models.is_loaded("tiny-b") and not models.is_loaded("tiny-a")
    assert models.get("tiny-b") is got[0] and loads == ["tiny-b"]  # kept, not loaded again
    assert models.get().name == "tiny-a" and loads == ["tiny-b", "tiny-a"]  # no name: the default


def test_each_model_has_its_own_card_defaults_vocabulary_and_state(models):
    circles, squares = models.get("tiny-circles"), models.get("tiny-squares")
    assert circles.name == "tiny-circles" and squares.name == "tiny-squares"
    assert "Draws tiny circles." in circles.capability() and "squares" not in circles.capability()
    assert "Draws tiny squares." in squares.capability() and "tiny-squares" in squares.describe()
    assert circles.examples == CIRCLES["examples"] and squares.examples == SQUARES["examples"]
    assert squares.defaults == {"num_inference_steps": 7, "guidance_scale": 1.5, "sampler": "ddim", "seed": 0}
    default = dir7.PipelineConfig()  # what tiny-circles was saved with
    assert (circles.defaults["sampler"], circles.defaults["guidance_scale"]) == (default.sampler,
                                                                                 default.guidance_scale)
    assert circles.has_state and not squares.has_state
    # the unknown-word notice follows the model's own training vocabulary
    assert circles.validate("a blue square", None, 2, 2.0, "ddim", 0)[1][0].startswith(
        "Never seen in training: blue, square.")
    assert squares.validate("a blue square", None, 2, 2.0, "ddim", 0)[1] == []


def test_an_unknown_model_is_a_clear_error(models):
    assert models.resolve(None) == models.resolve("") == models.default == "tiny-circles"
    for bad in ("tiny-triangles", 3, ["tiny-circles"]):
        with pytest.raises(InputError, match="Unknown model") as info:
            models.resolve(bad)
        assert "tiny-circles, tiny-squares" in str(info.value)
    with pytest.raises(gr.Error, match="Unknown model 'tiny-triangles'"):
        next(make_generate_handler(models, 0)("a red circle", "", 2, 2.0, "ddim", 0, False, "tiny-triangles"))
    with pytest.raises(gr.Error, match="Unknown model 'tiny-triangles'"):
        next(make_model_handler(models)("tiny-triangles"))


def test_the_image_says_which_model_made_it(models):
    handler = make_generate_handler(models, min_update_interval_s=0, figure_interval_s=0)
    runs = ((None, "tiny-circles", "a red circle"), ("tiny-squares", "tiny-squares", "a blue square"))
    for model, name, prompt in runs:  # None: the default model
        outputs = _generate(handler, model, prompt)
        image, status, _, trajectory, heatmap, png, model_used = outputs[-1]
        assert model_used == name and all(o[6] == name for o in outputs)
        assert "Done" in status and name in status
        assert image.info["model"] == name
        with Image.open(png) as f:
            assert f.text["model"] == name and os.path.basename(png).startswith(name)
        # no recurrent state, no state figures
        assert (trajectory is None and heatmap is None) == (not models.get(name).has_state)


def test_stop_works_while_the_model_is_still_loading(tmp_path, save_model):
    """Stop pressed during a first use's load: no sampling afterwards, and the flag is released."""
    from types import SimpleNamespace

    from app.service import StopFlags

    save_model(tmp_path, "tiny-circles", **CIRCLES)
    models = ModelRegistry.discover(device="cpu", root=tmp_path)
    stops = StopFlags()
    stream = make_generate_handler(models, 0, 0, stops=stops)(
        "a red circle", "", 3, 2.0, "ddim", 0, False, "tiny-circles", SimpleNamespace(session_hash="s1"))
    notice = next(stream)  # the loading notice: the model is not loaded yet
    assert "Loading tiny-circles" in notice[1]
    assert stops.request("s1")  # the page's Stop button finds this run's flag
    outputs = list(stream)
    assert len(outputs) == 1 and "Stopped" in outputs[0][1] and "before the first step" in outputs[0][1]
    assert not stops.request("s1")  # the run is over: its flag is gone
    assert models.is_loaded("tiny-circles")  # the load itself finished and is kept


def test_switching_models_shows_a_loading_notice_then_the_model(tmp_path, save_model):
    save_model(tmp_path, "tiny-circles", **{**CIRCLES, "cross_mode": "attention"})
    save_model(tmp_path, "tiny-squares", **SQUARES)
    models = ModelRegistry.discover(device="cpu", root=tmp_path)
    switch = make_model_handler(models)
    first, last = switch("tiny-squares")  # not loaded yet: a notice first, then the model's view
    capability = MODEL_VIEW.index("capability")
    assert "Loading tiny-squares" in first[capability]["value"]
    assert all(u == gr.skip() for i, u in enumerate(first) if i != capability)  # the rest stays until then
    view = model_view(models.get("tiny-squares"))
    assert [{k: v for k, v in u.items() if k != "__type__"} for u in last] == [view[p] for p in MODEL_VIEW]
    assert last[MODEL_VIEW.index("plots")]["visible"] is False  # attention: no state to plot
    assert last[MODEL_VIEW.index("steps")]["value"] == 7
    assert last[MODEL_VIEW.index("examples")]["samples"] == [["a blue square"]]
    assert len(list(switch("tiny-squares"))) == 1  # loaded: no notice
    back = list(switch("tiny-circles"))[-1]
    assert "Draws tiny circles." in back[MODEL_VIEW.index("capability")]["value"]


def test_a_model_that_fails_to_load_gets_a_short_message(tmp_path, save_model):
    save_model(tmp_path, "tiny-a", summary="A.", cross_mode="attention")
    broken = save_model(tmp_path, "tiny-b", summary="B.", cross_mode="attention")
    models = ModelRegistry.discover(device="cpu", root=tmp_path)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")  # damaged after start-up
    switch = make_model_handler(models)("tiny-b")
    assert "Loading tiny-b" in next(switch)[MODEL_VIEW.index("capability")]["value"]
    assert "could not be loaded" in next(switch)[MODEL_VIEW.index("capability")]["value"]  # not "Loading…"
    with pytest.raises(gr.Error, match="could not be loaded") as info:
        next(switch)
    assert str(tmp_path) not in str(info.value) and not models.is_loaded("tiny-b")
    with pytest.raises(gr.Error, match="could not be loaded"):
        _generate(make_generate_handler(models, 0), "tiny-b")
    assert _generate(make_generate_handler(models, 0), "tiny-a")[-1][6] == "tiny-a"  # the others still work


def test_the_page_offers_every_model_in_a_selector(models):
    with build_demo(models) as demo:
        (selector,) = _blocks(demo, "model")
        assert [c[1] for c in selector.choices] == models.names and selector.value == "tiny-circles"
        assert selector.interactive
        assert "Draws tiny circles." in _blocks(demo, "dir7-capability")[0].value
        assert _blocks(demo, "examples")[0].raw_samples == [[p] for p in CIRCLES["examples"]]


# ---- figures ---------------------------------------------------------------------------------


def _stats(steps=4, layers=3, heads=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((steps, layers, heads)), 1 + 3 * rng.random((steps, layers, heads))


def test_trajectory_figure_has_one_line_per_layer_per_metric_with_head_means():
    rms, srank = _stats()
    fig = trajectory_figure(rms, srank, total_steps=10, timesteps=[900, 800, 700, 600])
    lines = [t for t in fig.data if t.mode != "markers"]
    assert len(lines) == 2 * 3
    rms_lines = [t for t in lines if t.xaxis == "x"]
    rank_lines = [t for t in lines if t.xaxis == "x2"]
    assert len(rms_lines) == len(rank_lines) == 3
    for layer, trace in enumerate(rms_lines):
        assert list(trace.x) == [1, 2, 3, 4]
        np.testing.assert_allclose(trace.y, rms[:, layer].mean(axis=1))
        assert "layer" in trace.hovertemplate and "step" in trace.hovertemplate and "t = " in trace.hovertemplate
    for layer, trace in enumerate(rank_lines):
        np.testing.assert_allclose(trace.y, srank[:, layer].mean(axis=1))
    assert tuple(fig.layout.xaxis.range)[1] >= 10  # room for the steps still to come
    json.loads(fig.to_json())  # serialisable for gr.Plot


def test_layers_have_distinct_colours_a_colour_bar_and_axis_titles_for_any_depth():
    for depth in (1, 2, 11, 37):
        rms, srank = _stats(layers=depth)
        fig = trajectory_figure(rms, srank, total_steps=10)
        lines = [t for t in fig.data if t.mode != "markers" and t.xaxis == "x"]
        colors = [t.line.color for t in lines]
        assert len(set(colors)) == depth  # one colour per layer, none reused
        # the same layer has the same colour in both panels
        assert colors == [t.line.color for t in fig.data if t.mode != "markers" and t.xaxis == "x2"]
        bar = [t for t in fig.data if t.mode == "markers"]
        assert len(bar) == 1 and bar[0].marker.showscale and list(bar[0].marker.colorbar.tickvals) == list(range(depth))
        assert not fig.layout.showlegend  # the colour bar explains the colours: no legend to scroll
        for axis in (fig.layout.xaxis, fig.layout.xaxis2, fig.layout.yaxis, fig.layout.yaxis2):
            assert axis.title.text
    # RMS on a log axis, so layers near zero stand apart; an all-zero state still plots
    rms, srank = _stats(layers=3)
    rms[:, 1] = 0.0
    fig = trajectory_figure(rms, srank)
    assert fig.layout.yaxis.type == "log" and min(fig.data[1].y) > 0


def test_the_page_gets_the_figures_as_json_it_can_plot_with_nan_as_gaps():
    rms, srank = _stats(layers=2)
    rms[1, 0, 0] = np.nan
    spec = json.loads(to_json(trajectory_spec(rms, srank, 4, [3, 2, 1, 0])))
    assert spec["data"][0]["y"][1] is None and spec["layout"]["yaxis"]["type"] == "log"
    # the layer colour bar carries its scale itself: plotly.js knows few scales by name, and an
    # unknown name silently falls back to another scale than the lines'
    from plotly.colors import hex_to_rgb

    bar = spec["data"][-1]["marker"]
    assert isinstance(bar["colorscale"], list)
    assert spec["data"][0]["line"]["color"] == "rgb({}, {}, {})".format(*hex_to_rgb(bar["colorscale"][0][1]))
    go.Figure(spec)  # valid for plotly
    heat = json.loads(to_json(heatmap_spec(rms[1], srank[1], 2, 4)))
    assert heat["data"][0]["z"][0][0] is None


def test_heatmap_figure_shows_layer_by_head_for_both_metrics():
    rms, srank = _stats()
    fig = heatmap_figure(rms[-1], srank[-1], step=4, total=10)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    np.testing.assert_allclose(np.asarray(fig.data[0].z), rms[-1])
    np.testing.assert_allclose(np.asarray(fig.data[1].z), srank[-1])
    assert "4/10" in fig.layout.title.text
    assert "layer" in fig.data[0].hovertemplate and "head" in fig.data[0].hovertemplate
    assert "step 4/10" in fig.data[0].hovertemplate
    json.loads(fig.to_json())


def test_figures_work_for_a_single_step_and_reject_mismatched_shapes():
    rms, srank = _stats(steps=1, layers=1, heads=1)
    assert len(trajectory_figure(rms, srank).data) == 3  # a line per panel and the colour bar
    assert len(heatmap_figure(rms[0], srank[0]).data) == 2
    with pytest.raises(ValueError):
        trajectory_figure(rms, srank[:, :, :0])
    with pytest.raises(ValueError):
        heatmap_figure(rms, srank)  # 3-D where 2-D is expected


def test_notebook_links_point_to_the_repo_or_the_space(monkeypatch):
    from app.ui import explanation_markdown

    monkeypatch.delenv("DIR7_REPO_URL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    text = explanation_markdown()
    # run locally, the server serves no repository file: the paths and the command, not links
    assert "](" not in text and "jupyter lab notebooks/" in text
    for name in ("01_wkv_recurrence", "02_crosswkv", "03_state_dynamics", "04_state_tracking"):
        assert f"`notebooks/{name}.ipynb`" in text and (REPO / "notebooks" / f"{name}.ipynb").is_file()
    monkeypatch.setenv("SPACE_ID", "someone/dir7")
    assert "](https://huggingface.co/spaces/someone/dir7/blob/main/notebooks/01_wkv_recurrence.ipynb)" in (
        explanation_markdown()
    )
    monkeypatch.setenv("DIR7_REPO_URL", "https://example.org/dir7/blob/main")
    assert "](https://example.org/dir7/blob/main/notebooks/04_state_tracking.ipynb)" in explanation_markdown()
