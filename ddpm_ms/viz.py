"""Pictures: image grids (PNG), denoising GIFs, loss curves. Files are written atomically."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _atomic_target(path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.stem}.tmp{path.suffix}")


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255] (values outside are clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images, nrow: int | None = None, padding: int = 2, min_tile: int = 64) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> one (H', W', C) uint8 grid, `nrow` images per row
    (default: square-ish), each tile enlarged by an integer factor to at least `min_tile` px."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W) images, got shape {images.shape}")
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = to_uint8(images).transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    nrow = nrow or math.ceil(math.sqrt(n))
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


def save_grid(images, path, nrow: int | None = None) -> Path:
    """Write `images` as one PNG grid."""
    path, tmp = _atomic_target(path)
    _pil(make_grid(images, nrow)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_gif(frames, path, fps: float = 12.0, hold_last_s: float = 2.0, nrow: int | None = None) -> Path:
    """Write a sequence of image batches (each (N, C, H, W) in [-1, 1]) as an animated GIF of
    grids; the last frame is held for `hold_last_s` seconds."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path, tmp = _atomic_target(path)
    grids = [make_grid(f, nrow) for f in frames]
    if grids[0].shape[-1] == 1:
        grids = [g[..., 0] for g in grids]
    durations = [1.0 / fps] * (len(grids) - 1) + [hold_last_s]
    imageio.mimsave(tmp, grids, format="GIF", duration=[d * 1000 for d in durations], loop=0)
    os.replace(tmp, path)
    return path


def read_log(csv_path) -> dict[str, np.ndarray]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in (rows[0] if rows else {})}


def plot_loss(csv_path, png_path, title: str = "training loss") -> Path:
    """Loss against step from a run's log.csv, with a smoothed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(csv_path)
    path, tmp = _atomic_target(png_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if log:
        step, loss = log["step"], log["loss"]
        ax.plot(step, loss, color="tab:blue", alpha=0.35, lw=1, label="loss (per log interval)")
        if len(loss) >= 5:
            k = max(3, len(loss) // 20)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(step[k - 1:], smooth, color="tab:blue", lw=2, label=f"moving average of {k}")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
