"""Grids, GIFs and loss curves."""
import numpy as np
from PIL import Image

from ddpm_ms import viz


def test_grid_places_tiles_in_order():
    images = np.stack([np.full((1, 4, 4), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    grid = viz.make_grid(images, nrow=2, padding=1, min_tile=4)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 128 and grid[6, 1, 0] == 255
    assert grid[0, 0, 0] == 255  # padding is white


def test_grid_enlarges_small_images(tmp_path):
    images = np.zeros((4, 3, 8, 8), np.float32)
    path = viz.save_grid(images, tmp_path / "g.png")
    with Image.open(path) as im:
        assert im.size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2) and im.mode == "RGB"


def test_gif_has_one_frame_per_step(tmp_path):
    frames = [np.full((4, 1, 8, 8), v, np.float32) for v in np.linspace(-1, 1, 6)]
    path = viz.save_gif(frames, tmp_path / "d.gif")
    with Image.open(path) as im:
        assert im.n_frames == 6
    assert not list(tmp_path.glob(".*"))


def test_loss_plot_from_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,loss,img_per_s,elapsed_s\n" + "".join(
        f"{i * 10},1,{1.0 / (i + 1):.4f},10,{i}\n" for i in range(30)))
    assert viz.read_log(log)["loss"][0] == 1.0
    path = viz.plot_loss(log, tmp_path / "loss.png")
    with Image.open(path) as im:
        assert im.size == (700, 400)
