"""Grids, GIFs and loss curves."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm_ms import viz


def test_grid_places_tiles_in_order():
    images = np.stack([np.full((1, 4, 4), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    grid = viz.make_grid(images, nrow=2, padding=1, min_tile=4)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 128 and grid[6, 1, 0] == 255
    assert grid[0, 0, 0] == 255  # padding is white


def test_default_grid_width_is_square_ish_without_empty_slots():
    widths = {n: viz.grid_width(n) for n in (1, 4, 8, 9, 10, 16, 20, 64)}
    assert widths == {1: 1, 4: 2, 8: 4, 9: 3, 10: 5, 16: 4, 20: 5, 64: 8}
    assert viz.grid_width(7) == 4, "a prime count takes the width with the fewest empty slots (1), not 7 in a row"
    grid = viz.make_grid(np.zeros((10, 1, 4, 4), np.float32), padding=1, min_tile=4)
    assert grid.shape == (2 * 5 + 1, 5 * 5 + 1, 1)  # 2 rows of 5


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


def drawn_figures(monkeypatch):
    """The matplotlib figures the viz functions save, kept for a look at what they plot."""
    figures, save = [], viz._save_figure

    def keep(fig, png_path, **kwargs):
        figures.append(fig)
        return save(fig, png_path, **kwargs)

    monkeypatch.setattr(viz, "_save_figure", keep)
    return figures


def test_loss_plot_draws_the_logged_losses(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    steps = [10 * i for i in range(30)]
    losses = [float(f"{1.0 / (i + 1):.4f}") for i in range(30)]
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,loss,img_per_s,elapsed_s\n" + "".join(
        f"{s},1,{v:.4f},10,{i}\n" for i, (s, v) in enumerate(zip(steps, losses))))
    assert viz.read_log(log)["loss"].tolist() == losses
    path = viz.plot_loss(log, tmp_path / "loss.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
    (ax,) = figures[0].axes  # no lr column: one panel
    raw, smooth = ax.get_lines()
    assert raw.get_xdata().tolist() == steps and raw.get_ydata().tolist() == losses
    # 30 points: a moving average of 3, drawn at the last step of each window
    assert smooth.get_xdata().tolist() == steps[2:]
    np.testing.assert_allclose(smooth.get_ydata(), [sum(losses[i - 2:i + 1]) / 3 for i in range(2, 30)], rtol=1e-12)
    assert ax.get_yscale() == "log"


def test_loss_plot_adds_fid_and_the_learning_rate_when_logged(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    log = tmp_path / "log.csv"
    rows = [(1, 0.9, 1e-3, 2.0, ""), (2, 0.8, 2e-3, 1.5, "80.5"), (3, 0.7, 2e-3, 1.2, ""), (4, 0.6, 1e-3, 1.0, "40.25")]
    log.write_text("step,loss,lr,grad_norm,fid\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    viz.plot_loss(log, tmp_path / "loss.png")
    top, low, fid_axis, grad_axis = figures[0].axes  # the two panels, then their right-hand axes
    assert top.get_lines()[0].get_ydata().tolist() == [0.9, 0.8, 0.7, 0.6]
    (fid,) = fid_axis.get_lines()  # only the rows that evaluated
    assert fid.get_xdata().tolist() == [2, 4] and fid.get_ydata().tolist() == [80.5, 40.25]
    assert low.get_lines()[0].get_ydata().tolist() == [1e-3, 2e-3, 2e-3, 1e-3]
    assert grad_axis.get_lines()[0].get_ydata().tolist() == [2.0, 1.5, 1.2, 1.0]


def _trajectory(n_frames=4, n=6, size=8):
    from ddpm_ms.sampling import Frame

    rng = np.random.default_rng(0)
    frames = [Frame(100, rng.standard_normal((n, 1, size, size)).astype(np.float32), None)]
    for i, t in enumerate(np.linspace(75, 0, n_frames - 1).astype(int)):
        frames.append(Frame(int(t), rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32),
                            np.full((n, 1, size, size), i / n_frames, np.float32)))
    return frames


def test_denoising_gif_frames_size_and_held_last_frame(tmp_path):
    traj = _trajectory(n_frames=5, n=6)
    path = viz.save_denoising_gif(traj, tmp_path / "d.gif", fps=10, hold_last_s=1.5, nrow=3, max_images=6)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.mode in ("L", "P")
        # 3 x 2 tiles of 64 px with 2 px padding, under a 16 px caption strip
        assert im.size == (3 * 64 + 4 * 2, 16 + 2 * 64 + 3 * 2)
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations[:-1] == [100] * 4 and durations[-1] == 1500


def test_denoising_gif_side_by_side_shows_predicted_x0(tmp_path):
    traj = _trajectory(n_frames=3, n=4)
    plain = viz.save_denoising_gif(traj, tmp_path / "a.gif", max_images=2)
    both = viz.save_denoising_gif(traj, tmp_path / "b.gif", max_images=2, show_x0=True)
    with Image.open(plain) as a, Image.open(both) as b:
        assert b.size == (2 * a.size[0] + 8, a.size[1])  # two panels and an 8 px gap
        b.seek(2)
        right = np.asarray(b.convert("L"))[16 + 2:16 + 2 + 64, a.size[0] + 8 + 2:a.size[0] + 8 + 2 + 64]
    # the last frame's predicted x0 is the constant 1/3 -> gray level round((1/3 + 1) * 127.5) = 170
    assert abs(int(np.median(right)) - 170) <= 2


def test_forward_process_is_the_closed_form(tmp_path):
    from ddpm_ms.diffusion import NoiseSchedule

    sched = NoiseSchedule(1000, "cosine")
    image = viz.load_image(Path(__file__).resolve().parents[1] / "data" / "cats" / "skimage_chelsea.png", 32)
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    t = [0, 300, 999]
    noised = viz.forward_process(image, sched, t, seed=4)
    noise = np.random.default_rng(4).standard_normal(image.shape)
    for k, tk in enumerate(t):
        a = sched.sqrt_alphas_cumprod[tk]
        np.testing.assert_allclose(noised[k], a * image + np.sqrt(1 - a * a) * noise, atol=1e-5)
    assert np.corrcoef(noised[0].ravel(), image.ravel())[0, 1] > 0.99
    assert abs(np.corrcoef(noised[2].ravel(), image.ravel())[0, 1]) < 0.05
    path = viz.plot_forward_process(image, sched, tmp_path / "f.png", timesteps=t)
    with Image.open(path) as im:
        assert im.size[0] > 2 * im.size[1]  # one row of pictures
    try:
        viz.forward_process(image, sched, [1000])
    except ValueError as e:
        assert "0..999" in str(e)
    else:
        raise AssertionError("t = T must be refused")


def test_a_writer_that_fails_halfway_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from ddpm_ms.diffusion import NoiseSchedule

    def half_then_fail(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half a picture")
        raise OSError("disk full")

    schedules = [NoiseSchedule(100, "linear"), NoiseSchedule(100, "cosine")]
    figure, grid = tmp_path / "s.png", tmp_path / "g.png"
    figure.write_bytes(b"the previous figure")
    grid.write_bytes(b"the previous grid")
    with monkeypatch.context() as m:
        m.setattr(Figure, "savefig", half_then_fail)  # matplotlib figures
        m.setattr(Image.Image, "save", half_then_fail)  # PIL grids
        with pytest.raises(OSError, match="disk full"):
            viz.plot_schedules(schedules, figure)
        with pytest.raises(OSError, match="disk full"):
            viz.save_grid(np.zeros((4, 1, 8, 8)), grid)
    assert figure.read_bytes() == b"the previous figure" and grid.read_bytes() == b"the previous grid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s.png"], "no temporary file is left"
    viz.plot_schedules(schedules, figure)  # a write that succeeds replaces the file whole
    with Image.open(figure) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s.png"]


def test_comparison_titles_each_grid_with_its_name(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    grids = {"a": np.zeros((4, 1, 8, 8)), "b": np.ones((4, 1, 8, 8))}
    viz.save_comparison(grids, tmp_path / "c.png")
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    # each panel shows its own images: 0 is mid-gray (128), 1 white (255), on white padding
    assert [int(ax.get_images()[0].get_array().min()) for ax in axes] == [128, 255]
