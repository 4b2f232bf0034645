"""python scripts/train.py [--preset fashion_mnist|mnist|cats] [flags]: train a DDPM.

Writes a run directory with config.json, log.csv, checkpoints/, samples/ (a grid per epoch),
loss.png, denoising.gif and summary.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ddpm_ms.cli.args import positive_float, positive_int
from ddpm_ms.config import PRESETS, preset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a denoising diffusion model.")
    p.add_argument("--preset", default="fashion_mnist", choices=sorted(PRESETS),
                   help="data set and model preset (default: fashion_mnist, embedded in data/)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="passes over the data (preset default)")
    length.add_argument("--steps", type=positive_int, help="optimizer steps; overrides epochs")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="Adam learning rate")
    p.add_argument("--timesteps", type=positive_int, help="diffusion steps T (preset: 1000)")
    p.add_argument("--objective", choices=["eps", "x0", "v"],
                   help="what the model predicts: the noise, the clean image or v (preset default)")
    p.add_argument("--out", type=Path, help="run directory to create (default: runs/<preset>-<time>)")
    p.add_argument("--data", type=Path, help="data directory (default: the embedded copy under data/)")
    p.add_argument("--device", default="auto", choices=["auto", "Ascend", "GPU", "CPU"],
                   help="auto picks Ascend, then GPU, then CPU")
    p.add_argument("--mode", default="graph", choices=["graph", "pynative"],
                   help="graph compiles the train step (fast); pynative runs op by op (debugging)")
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", type=positive_int, help="steps between checkpoints")
    p.add_argument("--sample-every", type=positive_int, help="steps between sample grids (default: each epoch)")
    p.add_argument("--sample-steps", type=positive_int, help="DDPM steps for grids and the GIF (default 250)")
    p.add_argument("--num-samples", type=positive_int, help="images per grid")
    p.add_argument("--strict-data", action="store_true", help="a corrupt image is an error instead of skipped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args):
    cfg = preset(args.preset)
    t = cfg.train
    overrides = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "save_every": args.save_every, "sample_every": args.sample_every,
                 "sample_steps": args.sample_steps, "num_samples": args.num_samples}
    for name, value in overrides.items():
        if value is not None:
            setattr(t, name, value)
    if args.epochs is not None:
        t.steps = None
        if args.sample_every is None:
            t.sample_every = None  # training by epochs: one grid per epoch
    t.device, t.mode = args.device, args.mode
    if args.objective is not None:
        cfg.diffusion.objective = args.objective
    if args.timesteps is not None:
        cfg.diffusion.timesteps = args.timesteps
        if args.sample_steps is None:
            t.sample_steps = min(t.sample_steps, args.timesteps)
    if args.data is not None:
        cfg.data.root = str(args.data)
    cfg.data.strict = args.strict_data
    return cfg.validate()


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        p.error(str(e))
    out = args.out or Path("runs") / f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"

    from ddpm_ms.data import DataError
    from ddpm_ms.device import DeviceUnavailable
    from ddpm_ms.training import NonFiniteLoss, Trainer

    try:
        trainer = Trainer(cfg, out, progress=not args.no_progress)
        print(f"run directory: {trainer.out}  device: {trainer.device}  mode: {cfg.train.mode}  "
              f"steps: {trainer.total_steps} ({trainer.steps_per_epoch} per epoch)")
        summary = trainer.fit()
    except (DataError, DeviceUnavailable, FileExistsError, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done in {summary['total_wall_s'] / 60:.1f} min: final loss {summary['final_loss']:.4f}, "
          f"{summary['img_per_s']:.1f} images/s")
    print(f"samples: {summary['grid']}\nGIF: {summary['gif']}\ncheckpoint: {summary['checkpoint']}")
    return 0
