"""A screenshot of the demo page after a generation, for docs/images/demo.png.

    python research/demo_screenshot.py --out docs/images/demo.png [--prompt "a photo of a trouser"]

Serves scripts/demo.py's app on a free 127.0.0.1 port, drives it with Debian's headless Chromium
(Playwright, as tests/demo/test_demo.py does): class "none", the prompt and its scale, 8 images,
generate; waits for the grid and saves the full page. Prints every host the page contacted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--prompt", default="a photo of a trouser")
    p.add_argument("--prompt-scale", type=float, default=40)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)

    from ddpm_ms.web_demo import Demo, launch, offline_environment

    offline_environment()
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    from playwright.sync_api import sync_playwright

    from ddpm_ms.pipeline import DiffusionPipeline

    app, url = launch(Demo(DiffusionPipeline.from_pretrained("fashion_mnist")), "127.0.0.1", 0, block=False)
    hosts = set()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or r.url[:5]))
            page.goto(url, wait_until="networkidle")
            page.locator("#prompt textarea").fill(args.prompt)
            set_number(page, "prompt_scale", args.prompt_scale)
            set_number(page, "num", 8)
            page.locator("#generate").click()
            page.locator("#grid img[src]").wait_for(timeout=300_000)
            page.locator("#info").get_by_text("8 image(s)").wait_for(timeout=60_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        app.close()
    print(f"screenshot: {args.out}; hosts contacted: {sorted(hosts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
