"""The web demo as a person uses it: its handler draws the grid and the GIF the controls ask for; the
running app answers gradio_client with the same images; a headless Chromium sets a slider, clicks
generate and sees the images, and every request the page makes stays on 127.0.0.1; a taken port or a
wrong model path is one clear line."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs Gradio (pip install -e .[demo]; in requirements-dev.txt)")

from ddpm_ms.web_demo import MASKS, NO_CLASS, Demo, launch, mask_for, offline_environment  # noqa: E402
from ddpm_ms.pipeline import DiffusionPipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    offline_environment()
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    return Demo(DiffusionPipeline.from_pretrained("fashion_mnist"), out_dir=tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def served(demo):
    app, url = launch(demo, "127.0.0.1", 0, block=False)
    yield url
    app.close()


def pixels(path):
    return np.asarray(Image.open(path).convert("L"), np.float32)


def test_the_handler_draws_what_the_controls_ask_for(demo):
    grid, gif, files, info = demo.generate("Sneaker", "ddim", 6, 2.0, seed=1, num_images=4)
    assert files == [grid, gif] and Path(grid).suffix == ".png" and Path(gif).suffix == ".gif"
    assert Image.open(grid).size[0] > Image.open(grid).size[1] * 3  # 4 images in one row
    wide, *_ = demo.generate("Sneaker", "ddim", 2, 2.0, seed=1, num_images=8)
    assert abs(Image.open(wide).size[0] / Image.open(wide).size[1] - 2) < 0.1  # 8 images: 2 rows of 4
    with Image.open(gif) as g:
        assert g.n_frames == 6 + 1  # the noise and each of the 6 steps
    assert info == "4 image(s), ddim 6 steps, seed 1"
    again, *_ = demo.generate("Sneaker", "ddim", 6, 2.0, seed=1, num_images=4)
    np.testing.assert_array_equal(pixels(again), pixels(grid))  # a seed gives the same images
    white, _, _, white_info = demo.generate("Sneaker", "ddim", 6, 2.0, color="#ffffff", color_scale=40, seed=1,
                                            num_images=4)
    assert pixels(white).mean() > pixels(grid).mean() + 40  # pushed toward white
    assert "colour #ffffff x 40" in white_info


def test_the_handler_starts_from_an_image_and_repaints_a_region(demo):
    picture = Image.fromarray(np.full((28, 28), 200, np.uint8))  # a flat grey
    grid, _, _, info = demo.generate(NO_CLASS, "ddim", 8, seed=0, num_images=2, image=picture, strength=1.0,
                                     mask="right half")
    assert info.endswith("inpainting")
    tile = pixels(grid)[2:2 + 64, 2:2 + 64]  # the first image, shown 64 pixels wide
    assert np.abs(tile[:, :26] - 200).max() <= 1  # the kept left half is the picture
    assert np.abs(tile[:, 38:] - 200).mean() > 30  # the right half was repainted
    with pytest.raises(ValueError, match="number of images must be 1..16"):
        demo.generate(num_images=17)


def test_mask_presets_cover_the_named_regions():
    shape = (1, 8, 8)
    assert mask_for(MASKS[0], shape) is None
    assert mask_for("left half", shape)[0, :, :4].all() and not mask_for("left half", shape)[0, :, 4:].any()
    assert mask_for("centre", shape).sum() == 16 and mask_for("border", shape).sum() == 64 - 16
    with pytest.raises(ValueError, match="unknown mask"):
        mask_for("everything", shape)


def test_the_running_app_answers_gradio_client_with_the_handlers_images(demo, served, tmp_path):
    from gradio_client import Client

    client = Client(served, verbose=False, download_files=str(tmp_path))
    assert "/generate" in client.view_api(return_format="dict")["named_endpoints"]
    grid, gif, files, info = client.predict("Bag", "dpm++", 5, 2.0, "#ffffff", 0, "", 0, 7, 3, None, 0.8, MASKS[0],
                                            api_name="/generate")
    direct, *_ = demo.generate("Bag", "dpm++", 5, 2.0, seed=7, num_images=3)
    np.testing.assert_array_equal(pixels(grid), pixels(direct))
    assert info == "3 image(s), dpm++ 5 steps, seed 7" and len(files) == 2


def test_a_browser_sets_a_slider_generates_and_stays_on_this_machine(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium package")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) to drive the page with")
    from playwright.sync_api import sync_playwright

    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda r: requests.append(r.url))
        page.on("websocket", lambda ws: requests.append(ws.url))
        page.goto(served, wait_until="networkidle")
        steps = page.locator("#steps input[type=number]")
        steps.fill("7")
        steps.press("Enter")
        page.locator("#num input[type=number]").fill("4")
        page.locator("#num input[type=number]").press("Enter")
        page.locator("#generate").click()
        page.locator("#grid img[src]").wait_for(timeout=120_000)
        page.locator("#info").get_by_text("4 image(s), dpm++ 7 steps, seed 0").wait_for(timeout=30_000)
        shot = page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert len(shot) > 10_000
    remote = {u for u in requests if not u.startswith(("data:", "blob:")) and urlparse(u).hostname != "127.0.0.1"}
    assert not remote, f"the page reached beyond 127.0.0.1: {sorted(remote)[:5]}"
    assert any(urlparse(u).path.endswith(".png") or "/file=" in u or "gradio_api/file" in u for u in requests)


def run_demo(*args, timeout=120):
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_taken_port_and_a_wrong_model_are_one_clear_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = run_demo("--port", str(port))
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines()[-1] == (f"demo.py: error: port {port} on 127.0.0.1 is in use (another "
                                                     "demo?): pass --port N for another, or --port 0 for any free one")
    missing = run_demo("--model", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith(f"demo.py: error: {tmp_path / 'nowhere'} is neither")
