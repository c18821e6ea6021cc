"""The demo in a real browser: Playwright for Python driving Debian's Chromium (/usr/bin/chromium).

The shipped model, as a visitor meets it at 1280x800 and at phone width, and a second (tiny)
model picked in the selector; the page is saved as ``artifacts/app.png``. The README's
screenshot is taken with ``python -m scripts.screenshot`` (same helpers).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network from tests

import pytest

from scripts.screenshot import CHROMIUM, generate_and_wait, open_browser, screenshot, set_steps
from tests.helpers import REPO

ARTIFACT = REPO / "artifacts" / "app.png"
SHIPPED = REPO / "checkpoints" / "dir7-shapes"
STOP_ROUNDS = 3  # Stop must work every time, not most times
IN_VOCABULARY = "a red circle left of a blue square"
OUT_OF_VOCABULARY = "a photo of a cat on a sofa"
# the second model: quick to sample (softmax attention, no state to plot), its own card and defaults
TINY = "tiny-attention"
TINY_CARD = {"summary": "Draws coloured noise (a test model).", "examples": ["a blue square", "two red squares"],
             "vocabulary": "a blue red two square squares".split()}
TINY_STEPS = 4


@contextmanager
def cpu_load():
    """Both cores busy with matrix products beside the app, as on a shared demo machine."""
    code = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1500, 1500)\nwhile True:\n    a @ a\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def select_model(page, name: str) -> None:
    page.locator("#model input").click()
    page.get_by_role("option", name=name, exact=True).click()


def model_used(page) -> str:
    return page.locator("#model-used textarea").input_value()


def wait_for_text(page, selector: str, text: str, timeout_ms: int) -> None:
    page.wait_for_function(f"document.querySelector({selector!r}).innerText.includes({text!r})",
                           timeout=timeout_ms, polling=50)


def in_first_screen(page, selector: str, height: int) -> bool:
    """The element is inside the viewport without scrolling (top at least 0, bottom at most ``height``)."""
    box = page.locator(selector).first.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.browser
@pytest.mark.slow
def test_page_in_a_real_browser(tmp_path, save_model):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium)")
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("the shipped model is not in this checkout")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package 'playwright' is not installed")

    import dir7
    from app.service import ModelRegistry
    from app.ui import build_demo, launch_options

    tiny = save_model(tmp_path, TINY, **TINY_CARD, cross_mode="attention",
                      sampling=dir7.PipelineConfig(sampler="ddim", num_inference_steps=TINY_STEPS, guidance_scale=1.5))
    models = ModelRegistry.discover([SHIPPED, tiny], device="cpu")  # as app.py --checkpoint A --checkpoint B
    service = models.get()  # the default model, loaded (and warmed up) before the page is served
    depth = service.pipe.model.config.depth
    demo = build_demo(models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        with sync_api.sync_playwright() as playwright:
            browser = open_browser(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#generate").wait_for(timeout=30_000)

            # First screen: the model, what it draws, the prompt, Generate and the image, no scrolling.
            capability = page.locator("#dir7-capability").inner_text()
            assert "dir7-shapes" in capability and "coloured shapes" in capability and "model card" in capability
            assert page.locator("#model input").input_value() == "dir7-shapes"
            for selector in ("#model", "#dir7-capability", "#prompt textarea", "#generate", "#dir7-image"):
                assert in_first_screen(page, selector, 800), f"{selector} is not in the first screen"

            # A prompt of known words: no notice; the image and both plots render; one colour per layer.
            generate_and_wait(page, IN_VOCABULARY, steps=6, timeout_ms=120_000)
            status = page.locator("#status").inner_text()
            assert "6 steps" in status and "dir7-shapes" in status and "Never seen" not in status
            assert model_used(page) == "dir7-shapes"
            src = page.locator("#dir7-image img").get_attribute("src")
            assert src and "gradio_api/file=" in src and src.endswith(".png")
            assert page.locator("#dir7-image img").evaluate("img => img.complete && img.naturalWidth > 0")
            colours = page.locator("#plot-trajectory .js-plotly-plot").evaluate(
                "el => el.data.filter(t => t.xaxis === 'x' && t.line).map(t => t.line.color)")
            assert len(colours) == depth and len(set(colours)) == depth, colours
            assert page.locator("#plot-heatmap .js-plotly-plot .heatmaplayer image").count() == 2  # RMS, rank
            assert page.locator("#seed-used input").input_value() == "0"
            assert re.search(r"\.png", page.locator("#download").inner_text())
            screenshot(page, ARTIFACT)

            # Words the model never saw: a notice before the first step, and it still samples.
            page.locator("#prompt textarea").fill(OUT_OF_VOCABULARY)
            page.locator("#generate").click()
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('Never seen in training: cat, sofa')",
                timeout=30_000, polling=50)
            page.wait_for_function("document.querySelector('#status').innerText.includes('Done')",
                                   timeout=120_000, polling=200)

            # Stop, while a long generation streams and both cores are busy, ends it within a step,
            # several times in a row; the page shows where it stopped and nothing arrives after it.
            page.locator("#prompt textarea").fill(IN_VOCABULARY)
            set_steps(page, 250)
            with cpu_load():
                for _ in range(STOP_ROUNDS):
                    page.locator("#generate").click()
                    page.wait_for_function(
                        "/Step [3-9]/.test(document.querySelector('#status').innerText)", timeout=60_000,
                        polling=50,
                    )
                    page.locator("#stop").click()
                    page.wait_for_function(
                        "document.querySelector('#status').innerText.includes('Stopped')", timeout=30_000
                    )
                    deadline = time.monotonic() + 30
                    while models.active_generations and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert models.active_generations == 0
                    status = page.locator("#status").inner_text()
                    time.sleep(0.5)
                    assert page.locator("#status").inner_text() == status  # no step arrived after Stop
                    assert re.search(r"Stopped after step \d+ of 250", status)

            # Clicking an example fills the prompt (nothing is sampled).
            example = service.examples[1]
            page.get_by_text(example, exact=True).click()
            page.wait_for_function(f"document.querySelector('#prompt textarea').value === {example!r}",
                                   timeout=10_000)

            # The explanation panel names the notebooks and how to open them (no link that 404s here).
            page.locator("#explanation").get_by_text("What do the plots mean?").click()
            page.locator("#explanation").get_by_text("jupyter lab notebooks/").wait_for(timeout=10_000)
            assert page.locator("#explanation a[href*='notebooks/']").count() == 0

            # A whitespace-only prompt gets an error toast with a clear message, no stack trace.
            page.locator("#prompt textarea").fill("   ")
            page.locator("#generate").click()
            toast = page.locator("[data-testid='toast-body'].error")
            toast.wait_for(timeout=15_000)
            text = toast.inner_text()
            assert "enter a prompt" in text and "Traceback" not in text

            # Another model: its own card line, examples and sampling defaults, no state plots (it
            # has no state); it is loaded on first selection, and generating uses it.
            select_model(page, TINY)
            wait_for_text(page, "#dir7-capability", TINY_CARD["summary"], timeout_ms=60_000)
            examples = page.locator("#examples").inner_text()
            assert all(p in examples for p in TINY_CARD["examples"]) and service.examples[1] not in examples
            page.wait_for_function(f"document.querySelector('#steps input[type=number]').value === '{TINY_STEPS}'",
                                   timeout=10_000)
            page.locator("#no-state").wait_for(state="visible", timeout=10_000)
            assert not page.locator("#plot-trajectory").is_visible()
            page.get_by_text(TINY_CARD["examples"][1], exact=True).click()  # the new examples fill the prompt
            page.wait_for_function(
                f"document.querySelector('#prompt textarea').value === {TINY_CARD['examples'][1]!r}", timeout=10_000)
            page.locator("#generate").click()
            wait_for_text(page, "#status", f"Done — {TINY_STEPS} steps", timeout_ms=60_000)
            assert TINY in page.locator("#status").inner_text()
            assert model_used(page) == TINY
            assert page.locator("#dir7-image img").evaluate("img => img.complete && img.naturalWidth > 0")

            # Back to the shipped model (kept loaded): a generation started with it stays with it even
            # when another model is selected while it runs; the page says which model made the image.
            select_model(page, "dir7-shapes")
            wait_for_text(page, "#dir7-capability", "coloured shapes", timeout_ms=10_000)
            page.locator("#plot-trajectory").wait_for(state="visible", timeout=10_000)
            page.locator("#prompt textarea").fill(IN_VOCABULARY)
            page.locator("#generate").click()
            page.wait_for_function("/Step [1-9]/.test(document.querySelector('#status').innerText)",
                                   timeout=60_000, polling=50)
            select_model(page, TINY)
            wait_for_text(page, "#status", "Done", timeout_ms=120_000)
            assert "dir7-shapes" in page.locator("#status").inner_text()
            assert model_used(page) == "dir7-shapes"
            assert TINY_CARD["summary"] in page.locator("#dir7-capability").inner_text()  # selected meanwhile

            # Phone width: everything stacks in one column, nothing needs sideways scrolling.
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(f"http://127.0.0.1:{port}/")
            phone.locator("#generate").wait_for(timeout=30_000)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            for selector in ("#prompt textarea", "#generate", "#dir7-image"):
                assert phone.locator(selector).first.is_visible()
            browser.close()
    finally:
        demo.close()
    assert ARTIFACT.stat().st_size > 10_000
