"""Screenshot the demo in a real browser (Playwright driving Debian's Chromium), e.g. for the README.

    python app.py --port 7860 &
    python -m scripts.screenshot --url http://127.0.0.1:7860/ --out docs/app_screenshot.png

The browser test (tests/app/test_browser.py) drives the page with the same helpers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]


def open_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def set_steps(page, steps: int) -> None:
    """Open the Settings panel if it is closed, type the number of steps, and wait until the
    slider's own state (which its range input shows) holds it and keeps it: typed into a panel
    that was still being built, the value was sometimes reset, and Generate then sent the old
    one (25 steps for 6, in two of four full test runs)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    steps_box = page.locator("#steps input[type=number]")
    if not steps_box.is_visible():
        page.locator("#settings").get_by_text("Settings").click()
        steps_box.wait_for(state="visible", timeout=10_000)
    held = "n => document.querySelector('#steps input[type=range]').value === String(n)"
    for _ in range(10):
        steps_box.fill(str(steps))
        steps_box.press("Enter")
        steps_box.blur()
        try:
            page.wait_for_function(held, arg=steps, timeout=1_000, polling=50)
            page.wait_for_timeout(300)  # a reset comes soon after the fill, if at all
            if page.evaluate(held, steps):
                return
        except PlaywrightTimeoutError:
            pass
    raise AssertionError(f"the Steps slider did not keep {steps} (it shows {steps_box.input_value()})")


def generate_and_wait(page, prompt: str, steps: int | None, timeout_ms: int) -> None:
    """Type a prompt, click Generate, wait until the final image and both figures are on the page."""
    page.locator("#prompt textarea").fill(prompt)
    if steps is not None:
        set_steps(page, steps)
    page.locator("#generate").click()
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes('Done')", timeout=timeout_ms, polling=200
    )
    page.locator("#plot-trajectory .js-plotly-plot").wait_for(timeout=timeout_ms)
    page.locator("#plot-heatmap .js-plotly-plot").wait_for(timeout=timeout_ms)


def screenshot(page, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)


def main() -> None:
    """Screenshot a running app (the real model) after one generation, e.g. for the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "app_screenshot.png")
    parser.add_argument("--prompt", default="a red circle left of a blue square")
    parser.add_argument("--steps", type=int, default=None, help="default: the page's default")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.goto(args.url)
        page.locator("#generate").wait_for(timeout=60_000)
        generate_and_wait(page, args.prompt, args.steps, timeout_ms=600_000)
        screenshot(page, args.out)
        browser.close()
    # A 256-colour palette keeps the committed PNG small; the page has few colours anyway.
    from PIL import Image

    with Image.open(args.out) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
