"""Grids of several models side by side: the same classes, seed, sampler, steps and guidance for
each, one panel per model with its title (the DiT-against-U-Net figure of docs/experiments/dit.md).

    python research/side_by_side.py --out docs/images/dit_vs_unet.png \\
        "U-Net, MNIST=runs/mnist_unet" "DiT, MNIST=runs/mnist_dit_p4" \\
        "U-Net, Fashion-MNIST=fashion_mnist" "DiT, Fashion-MNIST=runs/fashion_dit"

Each MODEL is "title=source", the source anything DiffusionPipeline.from_pretrained takes (a run, a
checkpoint, a pipeline directory or a shipped name). Every model draws --rows images of each of its
classes in turn (one class per column) with its own sampling defaults unless flags override them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddpm_ms.device import select_device  # noqa: E402
from ddpm_ms.pipeline import DiffusionPipeline  # noqa: E402
from ddpm_ms.viz import make_grid  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="TITLE=SOURCE")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--rows", type=int, default=4, help="images per class (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", help="default: each model's own (DPM-Solver++ for the presets)")
    p.add_argument("--steps", type=int, help="model calls (default: the sampler's)")
    p.add_argument("--columns", type=int, default=2, help="panels per row of the figure")
    args = p.parse_args(argv)
    select_device("CPU")
    panels = []
    for spec in args.models:
        title, _, source = spec.partition("=")
        if not source:
            p.error(f"{spec!r} is not TITLE=SOURCE")
        pipe = DiffusionPipeline.from_pretrained(source)
        classes = max(pipe.num_classes, 1)
        out = pipe(num_images=classes * args.rows, seed=args.seed, sampler=args.sampler,
                   num_inference_steps=args.steps, progress=False)
        cfg = pipe.guidance()
        w, interval = cfg.scale, cfg.interval
        guided = f", w = {w:g}" + (f" at t <= {interval[1]}" if interval else "") if pipe.num_classes and w != 1 else ""
        panels.append((f"{title}\n{pipe.sampling.sampler}, {len(out.timesteps)} steps{guided}",
                       make_grid(out.images, nrow=classes, min_tile=28)))
        print(f"{title}: {source} ({pipe.model_config.arch}, {pipe.dataset})")
    cols = min(args.columns, len(panels))
    rows = (len(panels) + cols - 1) // cols
    aspect = max(g.shape[0] / g.shape[1] for _, g in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, rows * (5.2 * aspect + 0.55)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, grid) in zip(axes.flat, panels):
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
