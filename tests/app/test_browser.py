"""The demo in a real browser: Playwright for Python driving Debian's Chromium (/usr/bin/chromium).

A tiny random model; the page is saved as ``artifacts/app.png``. The README's screenshot of the
real model is taken with ``python -m scripts.screenshot`` (same helpers).
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

from scripts.screenshot import CHROMIUM, generate_and_wait, open_browser, screenshot
from tests.helpers import REPO, tiny_config

ARTIFACT = REPO / "artifacts" / "app.png"
EXAMPLE = ("two green triangles above a yellow star", "blurry")  # a row of app.ui.EXAMPLES
STOP_ROUNDS = 3  # Stop must work every time, not most times


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


@pytest.mark.browser
@pytest.mark.slow
def test_page_in_a_real_browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package 'playwright' is not installed")

    import dir7
    from app.service import DemoService
    from app.ui import build_demo, launch_options

    # Tiny and random, but 32 px so the screenshot shows a real image box.
    cfg = tiny_config(image_size=32, patch_size=4)
    service = DemoService(dir7.DIR7Pipeline.from_config(cfg), fallback_reason="test")
    demo = build_demo(service)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        with sync_api.sync_playwright() as playwright:
            browser = open_browser(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#generate").wait_for(timeout=30_000)
            # The page says plainly that this model is untrained.
            assert "UNTRAINED" in page.locator("#dir7-banner").inner_text()

            # Type a prompt, click Generate: the image and both plots render.
            generate_and_wait(page, "a red circle left of a blue square", steps=6, timeout_ms=60_000)
            src = page.locator("#dir7-image img").get_attribute("src")
            assert src and "gradio_api/file=" in src and src.endswith(".png")
            assert page.locator("#dir7-image img").evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator("#plot-trajectory .js-plotly-plot .scatterlayer .trace").count() >= 2
            assert page.locator("#plot-heatmap .js-plotly-plot .heatmaplayer image").count() == 2  # RMS, rank
            assert "6 steps" in page.locator("#status").inner_text()
            assert page.locator("#seed-used input").input_value() == "0"
            assert re.search(r"\.png", page.locator("#download").inner_text())
            screenshot(page, ARTIFACT)

            # Stop, while a long generation streams and both cores are busy, ends it within a step,
            # several times in a row; the page shows where it stopped and nothing arrives after it.
            page.locator("#steps input[type=number]").fill("250")
            page.locator("#steps input[type=number]").press("Enter")
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
                    while service.active_generations and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert service.active_generations == 0
                    status = page.locator("#status").inner_text()
                    time.sleep(0.5)
                    assert page.locator("#status").inner_text() == status  # no step arrived after Stop
                    assert re.search(r"Stopped after step \d+ of 250", status)

            # Clicking an example fills the prompt and negative prompt (nothing is sampled).
            page.get_by_text(EXAMPLE[0], exact=True).click()
            page.wait_for_function(
                f"document.querySelector('#prompt textarea').value === {EXAMPLE[0]!r}", timeout=10_000
            )
            assert page.locator("#negative textarea, #negative input").first.input_value() == EXAMPLE[1]

            # The explanation panel opens and links the notebooks.
            page.locator("#explanation").get_by_text("What do the plots mean?").click()
            link = page.locator("#explanation a[href*='notebooks/01_wkv_recurrence.ipynb']")
            link.wait_for(timeout=10_000)
            assert page.locator("#explanation a[href*='notebooks/04_state_tracking.ipynb']").count() == 1

            # A whitespace-only prompt gets an error toast with a clear message, no stack trace.
            page.locator("#prompt textarea").fill("   ")
            page.locator("#generate").click()
            toast = page.locator("[data-testid='toast-body'].error")
            toast.wait_for(timeout=15_000)
            text = toast.inner_text()
            assert "enter a prompt" in text and "Traceback" not in text
            browser.close()
    finally:
        demo.close()
    assert ARTIFACT.stat().st_size > 10_000
