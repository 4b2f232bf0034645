"""Pictures: image grids (PNG), denoising GIFs, the forward-process figure, schedule plots and loss
curves. Every file is written atomically (a temporary name, then a rename)."""
from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

import imageio.v2 as imageio
import mindspore as ms
import numpy as np
from PIL import Image, ImageDraw

from ddpm_ms.diffusion import forward_noise
from ddpm_ms.files import atomic_write
from ddpm_ms.images import in_mode, open_image


def _write(path, write) -> Path:
    """Pictures are written atomically (never half a PNG under the final name), not fsynced."""
    return atomic_write(path, write, durable=False)


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255] (values outside are clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_width(n: int) -> int:
    """Images per row for a grid of n: square-ish, and as few empty slots as a width between
    ceil(sqrt(n)) and twice that allows (10 images: 2 rows of 5, not 3 rows of 4 with 2 empty)."""
    side = math.ceil(math.sqrt(n))
    return min(range(side, 2 * side + 1), key=lambda k: (k * math.ceil(n / k) - n, k))


def make_grid(images, nrow: int | None = None, padding: int = 2, min_tile: int = 64) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> one (H', W', C) uint8 grid, `nrow` images per row
    (default: `grid_width`), each tile enlarged by an integer factor to at least `min_tile` px."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W) images, got shape {images.shape}")
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = to_uint8(images).transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    nrow = nrow or grid_width(n)
    ncol = math.ceil(n / nrow)
    th, tw = h * scale, w * scale
    grid = np.full((ncol * (th + padding) + padding, nrow * (tw + padding) + padding, c), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, nrow)
        y, x = padding + r * (th + padding), padding + q * (tw + padding)
        grid[y:y + th, x:x + tw] = tile
    return grid


def _pil(grid: np.ndarray) -> Image.Image:
    return Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)


def save_images(images, directory, prefix: str) -> list[Path]:
    """Every image of an (N, C, H, W) batch in [-1, 1] as its own PNG, `<prefix>_<index>.png`."""
    paths = []
    for i, img in enumerate(to_uint8(images).transpose(0, 2, 3, 1)):
        paths.append(_write(Path(directory) / f"{prefix}_{i:05d}.png",
                            lambda tmp, img=img: _pil(img).save(tmp, format="PNG")))
    return paths


def save_npz(images, path, labels=None) -> Path:
    """An (N, C, H, W) batch in [-1, 1] as one uint8 (N, H, W, C) array under the key arr_0 (the
    first entry: the layout FID tools read) and, when given, the N classes the images were drawn
    for under `labels` (one int broadcast to all)."""
    arrays = {"arr_0": to_uint8(images).transpose(0, 2, 3, 1)}
    if labels is not None:
        arrays["labels"] = np.broadcast_to(np.asarray(labels, np.int64), (len(arrays["arr_0"]),))

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return _write(path, write)


def save_grid(images, path, nrow: int | None = None) -> Path:
    """Write `images` as one PNG grid."""
    return _write(path, lambda tmp: _pil(make_grid(images, nrow)).save(tmp, format="PNG"))


def _captioned(grid: np.ndarray, caption: str, height: int = 16) -> np.ndarray:
    """`grid` (H, W, C uint8) with a white strip above it holding `caption` in black."""

    strip = Image.new("L" if grid.shape[-1] == 1 else "RGB", (grid.shape[1], height), "white")
    ImageDraw.Draw(strip).text((4, 2), caption, fill="black")
    strip = np.asarray(strip)
    strip = strip[..., None] if strip.ndim == 2 else strip
    return np.concatenate([strip, grid], axis=0)


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + gap + right.shape[1], left.shape[2]), 255, np.uint8)
    out[:left.shape[0], :left.shape[1]] = left
    out[:right.shape[0], left.shape[1] + gap:] = right
    return out


def write_gif(grids, path, fps: float = 12.0, hold_last_s: float = 2.0) -> Path:
    """Write ready-made uint8 frames (H, W, C) as a looping GIF; the last is held `hold_last_s` s."""

    if not grids:
        raise ValueError("a GIF needs at least one frame")
    if not fps > 0 or hold_last_s < 0:
        raise ValueError(f"fps must be positive and hold_last_s non-negative, got {fps} and {hold_last_s}")
    grids = [g[..., 0] if g.shape[-1] == 1 else g for g in grids]
    durations = [1000.0 / fps] * (len(grids) - 1) + [max(hold_last_s * 1000.0, 1000.0 / fps)]
    return _write(path, lambda tmp: imageio.mimsave(tmp, grids, format="GIF", duration=durations, loop=0))


def save_gif(frames, path, fps: float = 12.0, hold_last_s: float = 2.0, nrow: int | None = None,
             captions=None) -> Path:
    """Write a sequence of image batches (each (N, C, H, W) in [-1, 1]) as an animated GIF of
    grids, optionally with a caption above each; the last frame is held for `hold_last_s` seconds."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    grids = [make_grid(f, nrow) for f in frames]
    if captions is not None:
        grids = [_captioned(g, str(c)) for g, c in zip(grids, captions, strict=True)]
    return write_gif(grids, path, fps, hold_last_s)


def save_denoising_gif(trajectory, path, fps: float = 12.0, hold_last_s: float = 2.0, nrow: int | None = None,
                       show_x0: bool = False, max_images: int = 16) -> Path:
    """The denoising GIF from a `sample()` trajectory: a grid of the first `max_images` samples
    per kept step, captioned with t; with `show_x0`, the model's predicted x0 at that step beside
    x_t (as in the Hugging Face diffusion course)."""
    if not trajectory:
        raise ValueError("the trajectory is empty: sample with trajectory_every=k to record one")
    grids = []
    for frame in trajectory:
        x_t = make_grid(frame.sample[:max_images], nrow)
        grid = _captioned(x_t, f"x_t, t = {frame.t}")
        if show_x0:
            x0 = frame.pred_x0 if frame.pred_x0 is not None else np.zeros_like(frame.sample)
            grid = _side_by_side(grid, _captioned(make_grid(x0[:max_images], nrow), "predicted x0"))
        grids.append(grid)
    return write_gif(grids, path, fps, hold_last_s)


def load_image(path, size: int = 128, channels: int = 3) -> np.ndarray:
    """A photo centre-cropped to a square, resized to `size`, as a (C, H, W) float32 array in [-1, 1]."""
    im = in_mode(open_image(path, "photo"), channels)
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _pyplot():
    """pyplot for figures drawn straight to files. Scripts get the Agg backend (no window, no
    display needed); a notebook or any caller that already chose a backend (MPLBACKEND, or
    pyplot imported first) keeps its own, so its inline figures still show. (Imported here: the
    backend must be chosen before pyplot is first imported.)"""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_figure(fig, png_path, tight: bool = False) -> Path:
    plt = _pyplot()
    try:
        return _write(png_path, lambda tmp: fig.savefig(
            tmp, format="png", **({"bbox_inches": "tight", "pad_inches": 0.1} if tight else {})))
    finally:
        plt.close(fig)


def forward_process(image, schedule, timesteps, seed: int = 0) -> np.ndarray:
    """`image` (C, H, W) in [-1, 1] noised by the closed-form q(x_t | x_0) at each of `timesteps`
    with one shared noise draw: a (len(timesteps), C, H, W) array."""

    image = np.asarray(image, dtype=np.float32)
    t = np.asarray(timesteps, dtype=np.int32)
    if t.min() < 0 or t.max() >= schedule.timesteps:
        raise ValueError(f"timesteps must lie in 0..{schedule.timesteps - 1}, got {t.tolist()}")
    noise = np.random.default_rng(seed).standard_normal(image.shape).astype(np.float32)
    x0 = np.broadcast_to(image, (len(t),) + image.shape)
    eps = np.broadcast_to(noise, x0.shape)
    out = forward_noise(schedule.tensor("sqrt_alphas_cumprod"), schedule.tensor("sqrt_one_minus_alphas_cumprod"),
                        ms.Tensor(np.ascontiguousarray(x0)), ms.Tensor(t), ms.Tensor(np.ascontiguousarray(eps)))
    return out.asnumpy()


def plot_forward_process(image, schedule, png_path, timesteps=(0, 50, 100, 200, 400, 700, 999), seed: int = 0,
                         title: str | None = None) -> Path:
    """The forward process as one row of pictures: `image` noised at each of `timesteps`, each
    titled with t and alpha-bar_t (the share of signal power left)."""
    plt = _pyplot()
    noised = to_uint8(forward_process(image, schedule, timesteps, seed)).transpose(0, 2, 3, 1)
    fig, axes = plt.subplots(1, len(timesteps), figsize=(1.9 * len(timesteps), 2.6), dpi=100,
                             squeeze=False, layout="constrained")
    for ax, t, img in zip(axes[0], timesteps, noised):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"t = {t}\n" + r"$\bar\alpha_t$" + f" = {schedule.alphas_cumprod[t]:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title or f"forward process q(x_t | x_0), {schedule.name} schedule, T = {schedule.timesteps}")
    return _save_figure(fig, png_path)


def plot_schedules(schedules, png_path, p2_gammas=(0.0, 0.5, 1.0), p2_k: float = 1.0) -> Path:
    """Three panels against t: beta_t (log scale) and alpha-bar_t for each schedule in `schedules`
    (a list of NoiseSchedule), and the p2 loss weights (k + SNR)^-gamma of the first schedule for
    each gamma (gamma = 0 weights every t alike)."""
    plt = _pyplot()
    if not schedules:
        raise ValueError("plot_schedules needs at least one NoiseSchedule")
    fig, (ax_b, ax_a, ax_w) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100, layout="constrained")
    for sched in schedules:
        t = np.arange(sched.timesteps)
        ax_b.plot(t, sched.betas, label=sched.name)
        ax_a.plot(t, sched.alphas_cumprod, label=sched.name)
    first = schedules[0]
    for gamma in p2_gammas:
        ax_w.plot(np.arange(first.timesteps), first.p2_weights(gamma, p2_k), label=f"gamma = {gamma:g}")
    ax_b.set(title=r"$\beta_t$", xlabel="timestep t", ylabel="beta", yscale="log")
    ax_a.set(title=r"$\bar\alpha_t$ (signal power left)", xlabel="timestep t", ylabel="alpha-bar")
    ax_w.set(title=f"p2 loss weight, {first.name} schedule, k = {p2_k:g}", xlabel="timestep t",
             ylabel="(k + SNR)^-gamma", yscale="log")
    for ax in (ax_b, ax_a, ax_w):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save_figure(fig, png_path)


def save_comparison(grids: dict, png_path, columns: int | None = None) -> Path:
    """Several sample grids (name -> (N, C, H, W) images in [-1, 1]) side by side, each titled
    with its name: how samplers or checkpoints compare at a glance."""
    plt = _pyplot()
    if not grids:
        raise ValueError("save_comparison needs at least one grid")
    columns = columns or len(grids)
    rows = math.ceil(len(grids) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.6 * rows), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, images) in zip(axes.flat, grids.items()):
        grid = make_grid(images, min_tile=28)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=10)
    return _save_figure(fig, png_path, tight=True)


def read_log(csv_path) -> dict[str, np.ndarray]:
    """Columns of a run's log.csv as float arrays; an empty cell is NaN and a row cut short
    (a run killed mid-write) is left out."""
    def number(text):
        return float(text) if text not in (None, "") else float("nan")

    columns, rows = None, []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            columns = columns or list(r)
            try:
                rows.append([number(r[k]) for k in columns])
            except (TypeError, ValueError):
                continue
    return {k: np.array([row[i] for row in rows]) for i, k in enumerate(columns or [])} if rows else {}


def plot_loss(csv_path, png_path, title: str = "training loss") -> Path:
    """Loss against step from a run's log.csv, with a smoothed line (and FID on a second axis when
    the run evaluated while training); below it, when the log has them, the learning rate and
    the gradient norm."""
    plt = _pyplot()
    log = read_log(csv_path)
    extra = bool(log) and "lr" in log and np.isfinite(log["lr"]).any()
    fig, axes = plt.subplots(2 if extra else 1, 1, figsize=(7, 6 if extra else 4), dpi=100, sharex=True,
                             layout="constrained", height_ratios=[2, 1] if extra else None, squeeze=False)
    ax = axes[0, 0]
    if log:
        step, loss = log["step"], log["loss"]
        ax.plot(step, loss, color="tab:blue", alpha=0.35, lw=1, label="loss (per log interval)")
        if len(loss) >= 5:
            k = max(3, len(loss) // 20)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(step[k - 1:], smooth, color="tab:blue", lw=2, label=f"moving average of {k}")
        ax.set_yscale("log")
        fid = log.get("fid")
        if fid is not None and np.isfinite(fid).any():
            keep = np.isfinite(fid)
            twin = ax.twinx()
            twin.plot(step[keep], fid[keep], "o-", color="tab:purple", lw=1.5, ms=4, label="FID (right axis)")
            twin.set_ylabel("FID (eval during training)", color="tab:purple")
            handles, labels = ax.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            ax.legend(handles + more[0], labels + more[1])
        else:
            ax.legend()
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if extra:
        low = axes[1, 0]
        low.plot(log["step"], log["lr"], color="tab:green", lw=1.5)
        low.set_ylabel("learning rate", color="tab:green")
        low.set_ylim(0, 1.1 * float(np.nanmax(log["lr"])) or 1.0)
        low.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        low.grid(alpha=0.3)
        if "grad_norm" in log and np.isfinite(log["grad_norm"]).any():
            twin = low.twinx()
            twin.plot(log["step"], log["grad_norm"], color="tab:red", lw=1, alpha=0.7)
            twin.set_ylabel("gradient norm (before clipping)", color="tab:red")
        low.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    return _save_figure(fig, png_path)
