"""End to end: the demo launched in-process on 127.0.0.1, driven through ``gradio_client``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network from tests

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

import dir7
from app.service import MAX_SEED, DemoService, ModelRegistry
from app.ui import as_registry, build_demo, launch_options
from tests.helpers import tiny_config

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_service(text_encoder, name: str | None = None, **config) -> DemoService:
    cfg = tiny_config(patch_size=4, **config)
    return DemoService(dir7.DIR7Pipeline.from_config(cfg, text_encoder=text_encoder), name=name,
                       fallback_reason="test")


class RunningApp:
    def __init__(self, models: ModelRegistry | DemoService, **build_kwargs):
        self.models = as_registry(models)
        self.service = self.models.get()  # the default model
        self.demo = build_demo(self.models, **build_kwargs)
        port = free_port()
        self.demo.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options()
        )
        self.url = f"http://127.0.0.1:{port}/"

    def client(self) -> Client:
        return Client(self.url, verbose=False, download_files=False)

    def close(self):
        self.demo.close()


@pytest.fixture(scope="module")
def app(text_encoder):
    # Two models, the default one first; the second one has no recurrent state (attention).
    models = ModelRegistry.of(tiny_service(text_encoder, "tiny-prefix"),
                              tiny_service(text_encoder, "tiny-attention", cross_mode="attention"))
    # Stream every step: the tiny model is faster than the UI's coalescing interval.
    running = RunningApp(models, min_update_interval_s=0, figure_interval_s=0)
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(app) -> Client:
    return app.client()


def generate(client: Client, prompt="a red circle left of a blue square", negative="", steps=4, guidance=4.0,
             sampler="ddim", seed=0, randomize=False, model=None):  # fmt: skip
    # without a model, the call an API client written before the selector makes: the default model
    kwargs = {} if model is None else {"model": model}
    return client.submit(prompt, negative, steps, guidance, sampler, seed, randomize, api_name="/generate", **kwargs)


def fetch_image(app: RunningApp, value) -> Image.Image:
    """The image output is a FileData dict (or its URL/path); read it back over HTTP like a browser."""
    url = value.get("url") if isinstance(value, dict) else value
    if not url.startswith("http"):
        url = f"{app.url}gradio_api/file={url}"
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    from io import BytesIO

    return Image.open(BytesIO(response.content))


def test_a_prompt_streams_updates_then_the_final_image_and_both_figures(app, client):
    job = generate(client, steps=5, seed=11)
    outputs = list(job)  # one item per streamed update
    assert len(outputs) >= 5  # several updates, not only the result
    assert all(o[2] == 11 for o in outputs)  # the seed used is shown throughout
    streamed_images = [o[0] for o in outputs[1:-1] if o[0] is not None]
    assert len(streamed_images) >= 3  # x0 previews arrive while sampling
    image, status, seed_used, trajectory, heatmap, png, model_used = outputs[-1]
    assert seed_used == 11 and model_used == app.service.name
    assert "Done" in status
    final = fetch_image(app, image)
    assert final.format == "PNG" and final.size == (16, 16)
    for figure in (trajectory, heatmap):
        assert figure["type"] == "plotly"
        assert json.loads(figure["plot"])["data"]  # a figure with traces
    assert fetch_image(app, png).format == "PNG"  # the download is a PNG too


def test_same_inputs_and_seed_give_the_same_image(app, client):
    images = [np.asarray(fetch_image(app, generate(client, seed=5).result()[0])) for _ in range(2)]
    assert np.array_equal(images[0], images[1])


def test_randomized_seed_is_reported(client):
    seed_used = generate(client, seed=0, randomize=True, steps=1).result()[2]
    assert isinstance(seed_used, int) and 0 <= seed_used <= MAX_SEED


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"prompt": "   "}, "enter a prompt"),
        ({"prompt": "x" * 5000}, "characters long"),
        ({"steps": 0}, "Steps"),
        ({"steps": 10_000}, "Steps"),
        ({"guidance": 25}, "Guidance scale"),
        ({"guidance": -1}, "Guidance scale"),
        ({"seed": 0.5}, "whole number"),
        ({"seed": 2**64}, "whole number"),
        ({"seed": "seven"}, "Seed must be a number"),
        ({"sampler": "euler"}, "Sampler must be one of"),
        ({"model": "dir7-nope"}, "Unknown model 'dir7-nope': this demo serves tiny-prefix, tiny-attention."),
    ],
)
def test_bad_inputs_get_a_clear_error_message(client, overrides, fragment):
    with pytest.raises(AppError) as info:
        generate(client, **overrides).result(timeout=60)
    assert fragment in str(info.value)
    assert "Traceback" not in str(info.value)


def test_the_api_takes_the_model_and_says_which_one_made_the_image(app, client):
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    (model,) = [p for p in params if p["parameter_name"] == "model"]
    assert model["parameter_default"] == app.models.default  # optional: the default model
    for name in app.models.names:
        image, status, _, trajectory, _, png, model_used = generate(client, model=name, steps=2).result(timeout=60)
        assert model_used == name and name in status
        assert fetch_image(app, png).text["model"] == name
        assert fetch_image(app, image).text["model"] == name
        assert (trajectory is not None) == app.models.get(name).has_state


def test_too_long_prompt_is_truncated_with_a_notice(app, client):
    prompt = " ".join(["a red circle left of a blue square"] * 20)
    assert app.service.encoder.count_tokens(prompt) > app.service.max_tokens

    async def run():
        job = generate(client, prompt=prompt, steps=2)
        logs = [u.log async for u in job if getattr(u, "log", None)]
        return logs, job.result()

    logs, result = asyncio.run(run())
    assert "ignored" in result[1]  # in the status text on the page
    assert any(level == "warning" and "ignored" in text for text, level in logs)  # and as a toast


def test_concurrent_requests_all_complete(app, text_encoder):
    clients = [app.client() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: generate(c, steps=3, seed=3).result(timeout=120), clients))
    images = [np.asarray(fetch_image(app, r[0])) for r in results]
    assert all("Done" in r[1] for r in results)
    assert all(np.array_equal(images[0], im) for im in images)  # shared model, no cross-talk


def test_files_outside_gradio_cache_are_not_served(app):
    for path in (REPO / "app.py", REPO / "pyproject.toml"):
        response = httpx.get(f"{app.url}gradio_api/file={path}", timeout=10)
        assert response.status_code in (403, 404)


@pytest.mark.slow
def test_stop_cancels_sampling_between_steps(app, monkeypatch):
    steps_run = []
    original = app.service.pipe.steps

    def counting(*args, **kwargs):
        for ev in original(*args, **kwargs):
            steps_run.append(ev.step)
            yield ev

    monkeypatch.setattr(app.service.pipe, "steps", counting)
    job = generate(app.client(), steps=250)
    deadline = time.monotonic() + 60
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    job.cancel()
    deadline = time.monotonic() + 30
    while app.service.active_generations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.service.active_generations == 0
    stopped_at = len(steps_run)
    assert 2 <= stopped_at < 250
    time.sleep(0.5)
    assert len(steps_run) == stopped_at  # nothing runs after the stop
    # and the worker is free again
    assert "Done" in generate(app.client(), steps=2).result(timeout=60)[1]


@pytest.mark.slow
def test_a_full_queue_answers_busy(text_encoder):
    running = RunningApp(tiny_service(text_encoder), max_queue=1, concurrency_limit=1)
    try:
        release = threading.Event()
        original = running.service.pipe.steps

        def slow(*args, **kwargs):  # hold the single worker until the test has filled the queue
            for ev in original(*args, **kwargs):
                release.wait(30)
                yield ev

        running.service.pipe.steps = slow
        client = running.client()
        first = generate(client, steps=2)
        deadline = time.monotonic() + 30
        while running.service.active_generations == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        waiting = generate(client, steps=2)  # fills the one queue place
        time.sleep(0.5)
        with pytest.raises(QueueError, match=r"[Qq]ueue is full"):
            generate(client, steps=2).result(timeout=30)
        release.set()
        assert "Done" in first.result(timeout=60)[1]
        assert "Done" in waiting.result(timeout=60)[1]
    finally:
        running.close()


def test_every_api_input_and_output_is_labelled(client):
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
    for item in (*endpoint["parameters"], *endpoint["returns"]):
        assert item["label"] and not item["label"].startswith("value_"), item
