"""python scripts/figures.py forward|schedules [flags]: the pictures that explain diffusion.

forward: a photo (default: the embedded cat) noised by q(x_t | x_0) at several t.
schedules: betas, alpha-bar and the p2 loss weights of the beta schedules.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ddpm_ms import viz
from ddpm_ms.cli.args import positive_int
from ddpm_ms.cli.command import command
from ddpm_ms.config import BETA_SCHEDULES
from ddpm_ms.data.paths import DATA_ENV, data_root
from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.registry import DATASETS

CAT = "skimage_chelsea.png"  # in the image folder's default folder under the data root


def default_image() -> Path:
    """The embedded cat photo under the data root (an error saying what to pass when there is none)."""
    root = data_root()
    if root is None:
        raise FileNotFoundError(f"no --image given and no embedded cat photo: {DATA_ENV} is not set and ddpm_ms runs "
                                f"from an installed package, not a checkout with data/; pass --image PHOTO "
                                f"(or set {DATA_ENV} to a folder that holds {DATASETS['image_folder'].folder}/{CAT})")
    return root / DATASETS["image_folder"].folder / CAT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="figures.py", description="Draw the forward process or the noise schedules.")
    sub = p.add_subparsers(dest="figure", required=True)
    fwd = sub.add_parser("forward", help="a photo noised at several timesteps")
    fwd.add_argument("--image", type=Path, help=f"photo to noise (default: the embedded cat photo, {CAT} under the data root)")
    fwd.add_argument("--size", type=positive_int, default=64, help="side of the resized centre crop in pixels")
    fwd.add_argument("--t", type=int, nargs="+", default=[0, 50, 100, 200, 400, 700, 999], help="timesteps")
    fwd.add_argument("--schedule", default="cosine", choices=BETA_SCHEDULES)
    fwd.add_argument("--timesteps", type=positive_int, default=1000, help="T")
    fwd.add_argument("--seed", type=int, default=0)
    fwd.add_argument("--out", type=Path, default=Path("forward_process.png"))
    sch = sub.add_parser("schedules", help="betas, alpha-bar and p2 weights")
    sch.add_argument("--schedules", nargs="+", default=list(BETA_SCHEDULES), choices=BETA_SCHEDULES)
    sch.add_argument("--timesteps", type=positive_int, default=1000, help="T")
    sch.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="p2 gamma values")
    sch.add_argument("--out", type=Path, default=Path("schedules.png"))
    return p


def run(args) -> int:
    if args.figure == "forward":
        path = args.image or default_image()
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        image = viz.load_image(path, args.size)
        out = viz.plot_forward_process(image, NoiseSchedule(args.timesteps, args.schedule), args.out,
                                       timesteps=args.t, seed=args.seed)
    else:
        out = viz.plot_schedules([NoiseSchedule(args.timesteps, s) for s in args.schedules], args.out,
                                 p2_gammas=args.gammas)
    print(out)
    return 0


main = command("figures.py", parser, run, errors=(OSError,))  # OSError: a photo PIL cannot read
