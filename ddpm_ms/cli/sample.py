"""python scripts/sample.py --run DIR [flags]: draw images from a trained model.

Writes a grid PNG and, on request, every image as its own PNG (--save-dir), all images as one
uint8 N x H x W x C array (--npz, key "arr_0", the layout FID tools read, with the class of each
image under "labels" for a class-conditional model) and the denoising GIF
(--gif). --compare draws the same noise with DDPM (all T steps), DDIM (50), DPM-Solver++ (20) and
its SDE form (20) and puts the four grids side by side. A class-conditional model draws every class
in turn (one per grid column) or the --class-label given, with classifier-free guidance
--guidance-scale.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ddpm_ms.cli.args import (GUIDANCE_INTERVAL_HELP, LAMBDA_MIN_CLIPPED_HELP, SOLVER_ORDER_HELP, log_snr_limit,
                              guidance_interval, dpm_solver_flag_problem,
                              non_negative_float, non_negative_int, positive_float, positive_int, unit_float)
from ddpm_ms.config import SAMPLER_NAMES

COMPARED = ("ddpm", "ddim", "dpm++", "dpm++sde")
TITLES = {"ddpm": "DDPM", "ddim": "DDIM (eta 0)", "dpm++": "DPM-Solver++ 2M", "dpm++sde": "DPM-Solver++ 2M SDE"}


def sampler_title(name: str, solver_order: int | None = None) -> str:
    """The sampler's name for people, with DPM-Solver++'s order when it is not 2 ("DPM-Solver++ 3M")."""
    return TITLES[name].replace("2M", f"{solver_order}M") if solver_order else TITLES[name]


def sampler_tag(args, steps: int) -> str:
    """The file-name part that says how images were drawn: dpmpp-20steps-seed0, dpmpp-3M-20steps-seed0.
    Order 2 is the default's, so `--solver-order 2` names its (identical) images as the default does."""
    order = f"-{args.solver_order}M" if args.solver_order not in (None, 2) else ""
    return f"{args.sampler.replace('+', 'p')}{order}-{steps}steps-seed{args.seed}"


class UsageError(ValueError):
    """An argument that only the loaded model can show to be wrong."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample.py", description="Draw images from a trained diffusion model.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory: its config.json and latest checkpoint")
    src.add_argument("--ckpt", type=Path, help="a checkpoint file; its run directory must hold config.json")
    p.add_argument("--sampler", default="dpm++", choices=SAMPLER_NAMES,
                   help="ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M) or dpm++sde (its stochastic "
                        "SDE form); default dpm++")
    p.add_argument("--steps", type=positive_int,
                   help="model calls: default all T for ddpm, 50 for ddim, 20 for dpm++ and dpm++sde")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"],
                   help="which timesteps the sampler visits: trailing (starts at T-1; the default for dpm++), "
                        "leading (starts at t = 950 for 20 steps; the default for the others), linspace; "
                        "see docs/sampling.md")
    p.add_argument("--lambda-min-clipped", type=log_snr_limit, metavar="LOGSNR|none", help=LAMBDA_MIN_CLIPPED_HELP)
    p.add_argument("--solver-order", type=int, choices=[1, 2, 3], help=SOLVER_ORDER_HELP)
    p.add_argument("--eta", type=unit_float, help="DDIM noise scale, 0 (deterministic, default) to 1")
    p.add_argument("--class-label", metavar="LABEL",
                   help="class-conditional models: draw this class only, by number or name (e.g. 7 or sneaker); "
                        "'none' draws unconditionally. Default: every class in turn, one per column")
    p.add_argument("--guidance-scale", type=non_negative_float, metavar="W",
                   help="classifier-free guidance weight of a class-conditional model (default: the run's "
                        "train.guidance_scale; 1: no guidance, 0: unconditional)")
    p.add_argument("--guidance-rescale", type=unit_float, metavar="PHI",
                   help="with guidance: rescale its output toward the conditional one's spread, against "
                        "over-exposure (Lin et al. 2024; default: the run's train.guidance_rescale; 0: off)")
    p.add_argument("--guidance-interval", type=guidance_interval, metavar="LO,HI|all",
                   help=GUIDANCE_INTERVAL_HELP + " (default: the run's train.guidance_interval)")
    p.add_argument("--num", type=positive_int, default=64, help="images to draw (default 64)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per model call (default 64)")
    p.add_argument("--out", type=Path, help="grid PNG (default: <run>/samples/<sampler>-<steps>steps-seed<S>.png)")
    p.add_argument("--nrow", type=positive_int, help="images per grid row (default: square)")
    p.add_argument("--save-dir", type=Path, help="also write every image as its own PNG here")
    p.add_argument("--npz", type=Path, help="also write all images as one uint8 N x H x W x C array "
                   "(arr_0; a class-conditional model's classes under labels)")
    p.add_argument("--gif", type=Path, help="also write the denoising GIF of the first batch here")
    p.add_argument("--gif-every", type=positive_int, help="steps between GIF frames (default: about 50 frames)")
    p.add_argument("--gif-num", type=positive_int, default=16, help="images shown in the GIF (default 16)")
    p.add_argument("--gif-x0", action="store_true", help="show the predicted x0 beside x_t in the GIF")
    p.add_argument("--fps", type=positive_float, default=12.0, help="GIF frames per second (default 12)")
    p.add_argument("--compare", action="store_true",
                   help="DDPM (T steps), DDIM (50), DPM-Solver++ (20) and its SDE form (20) on the same noise, "
                        "side by side")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "raw", "both"],
                   help="auto (default): the EMA weights when the checkpoint has them, else the raw ones; "
                        "both: EMA and raw side by side from the same noise")
    p.add_argument("--no-clip", action="store_true", help="do not clamp the predicted x0 to [-1, 1]")
    p.add_argument("--device", default="auto", choices=["auto", "Ascend", "GPU", "CPU"],
                   help="auto picks Ascend, then GPU, then CPU")
    p.add_argument("--mode", default="graph", choices=["graph", "pynative"],
                   help="graph compiles the model call (fast); pynative runs op by op")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def locate_run(args) -> tuple[Path, Path | None]:
    """(run directory holding config.json, checkpoint or None for the latest)."""
    if args.run is not None:
        if not args.run.is_dir():
            raise FileNotFoundError(f"run directory {args.run} does not exist")
        return args.run, None
    ckpt = args.ckpt
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    for run in (ckpt.parent.parent, ckpt.parent):
        if (run / "config.json").is_file():
            return run, ckpt
    raise FileNotFoundError(f"no config.json beside {ckpt} or in {ckpt.parent.parent}: keep checkpoints inside "
                            "their run directory (run/checkpoints/*.ckpt) or pass --run")


def npz_labels(labels, num_classes):
    """The labels an .npz keeps: one per image, none for unconditional samples or "no class" (label num_classes)."""
    if labels is None or (np.ndim(labels) == 0 and int(labels) == num_classes):
        return None
    return labels


def class_labels(args, cfg):
    """(labels for --num images or None, guidance scale) from --class-label and --guidance-scale."""
    from ddpm_ms.data.datasets import CLASS_NAMES
    from ddpm_ms.sampling import balanced_labels

    n = cfg.model.num_classes
    if not n:
        given = [f for f, v in (("--class-label", args.class_label), ("--guidance-scale", args.guidance_scale),
                                ("--guidance-rescale", args.guidance_rescale),
                                ("--guidance-interval", args.guidance_interval)) if v is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to class-conditional "
                             "models; this one is unconditional (train with --num-classes 10 for one)")
        return None, 1.0
    guidance = cfg.train.guidance_scale if args.guidance_scale is None else args.guidance_scale
    text = args.class_label
    if text is None:
        return balanced_labels(args.num, n), guidance
    if text.lower() == "none":
        return n, guidance  # "no class": the unconditional model
    names = CLASS_NAMES.get(cfg.data.dataset, ())
    key = text.lower().replace("-", " ").replace("_", " ")
    matches = [i for i, name in enumerate(names) if key in (name.lower(), name.lower().split("/")[0])]
    if text.isdigit() and int(text) < n:
        return int(text), guidance
    if matches:
        return matches[0], guidance
    known = ", ".join(f"{i} {name}" for i, name in enumerate(names)) or f"0..{n - 1}"
    raise UsageError(f"--class-label {text!r} is not one of this model's classes ({known}) or 'none'")


def resolve_steps(scheduler, steps, T) -> int:
    """--steps, or the scheduler's own default (all T for DDPM, at most 50 / 20 for DDIM / DPM-Solver++)."""
    steps = steps or scheduler.num_inference_steps
    if steps > T:
        raise UsageError(f"--steps {steps} is more than the model's {T} diffusion timesteps; use 1..{T}")
    return steps


def run(args) -> int:
    from ddpm_ms import viz
    from ddpm_ms.device import select_device
    from ddpm_ms.sampling import sample_many, scheduler_for
    from ddpm_ms.training import load_model

    if args.eta is not None and (args.sampler != "ddim" or args.compare):
        raise UsageError("--eta applies to --sampler ddim only")
    if args.solver_order is not None and args.compare:
        raise UsageError("--compare draws each sampler at its default order: drop --solver-order")
    if problem := dpm_solver_flag_problem(args.sampler, args.solver_order,
                                          None if args.compare else args.lambda_min_clipped):
        raise UsageError(problem)
    if args.compare and (args.steps or args.save_dir or args.npz or args.gif):
        raise UsageError("--compare uses fixed step counts and writes one figure: drop --steps, --save-dir, "
                         "--npz and --gif")
    if args.weights == "both" and (args.compare or args.save_dir or args.npz or args.gif):
        raise UsageError("--weights both writes one side-by-side figure: drop --compare, --save-dir, --npz and --gif")
    run_dir, ckpt = locate_run(args)
    device = select_device(args.device)
    model, cfg = load_model(run_dir, ckpt, weights="ema" if args.weights == "both" else args.weights)
    T = cfg.diffusion.timesteps
    image_shape = (cfg.model.channels, *cfg.model.image_size)
    labels, guidance = class_labels(args, cfg)
    if labels is not None and args.class_label is None and args.nrow is None:
        args.nrow = cfg.model.num_classes  # one class per column
    common = dict(batch_size=args.batch_size, seed=args.seed, jit=args.mode == "graph",
                  progress=not args.no_progress, class_labels=labels, guidance_scale=guidance,
                  guidance_rescale=cfg.train.guidance_rescale if args.guidance_rescale is None else args.guidance_rescale,
                  guidance_interval=(cfg.train.guidance_interval if args.guidance_interval is None
                                     else args.guidance_interval or None))
    samples_dir = run_dir / "samples"
    print(f"model: {run_dir} ({cfg.preset}, T = {T}, {model.loaded_weights} weights)  device: {device}  "
          f"mode: {args.mode}")

    if args.compare:
        grids, lines = {}, []
        for name in COMPARED:
            scheduler = scheduler_for(name, cfg, clip=not args.no_clip, timestep_spacing=args.spacing,
                                      lambda_min_clipped=args.lambda_min_clipped if name.startswith("dpm++") else None)
            steps = scheduler.num_inference_steps
            tic = time.perf_counter()
            images, _ = sample_many(model, scheduler, args.num, image_shape, num_inference_steps=steps, **common)
            seconds = time.perf_counter() - tic
            grids[f"{TITLES[name]}, {steps} steps\n{seconds:.1f} s for {args.num} images"] = images
            lines.append(f"{TITLES[name]:>19}: {steps:4d} steps, {seconds:6.1f} s, {args.num / seconds:6.1f} images/s")
        out = viz.save_comparison(grids, args.out or samples_dir / f"compare-seed{args.seed}.png")
        print("\n".join(lines))
        print(f"comparison: {out}")
        return 0

    scheduler = scheduler_for(args.sampler, cfg, args.eta, clip=not args.no_clip,
                              timestep_spacing=args.spacing, lambda_min_clipped=args.lambda_min_clipped,
                              solver_order=args.solver_order)
    steps = resolve_steps(scheduler, args.steps, T)
    if args.weights == "both":
        return compare_weights(args, run_dir, ckpt, model, scheduler, steps, image_shape, common)
    gif_every = args.gif_every or max(1, steps // 50)
    tic = time.perf_counter()
    images, trajectory = sample_many(model, scheduler, args.num, image_shape, num_inference_steps=steps,
                                     trajectory_every=gif_every if args.gif else None, **common)
    seconds = time.perf_counter() - tic
    tag = sampler_tag(args, steps)
    grid = viz.save_grid(images, args.out or samples_dir / f"{tag}.png", nrow=args.nrow)
    w, phi, interval = common["guidance_scale"], common["guidance_rescale"], common["guidance_interval"]
    guidance = (f", guidance w = {w:g}" + (f" rescaled {phi:g}" if phi else "")
                + (f" at {interval[0]} <= t <= {interval[1]}" if interval else "")) if labels is not None and w != 1 else ""
    print(f"{args.num} images with {sampler_title(args.sampler, args.solver_order)} in {steps} steps{guidance}: {seconds:.1f} s "
          f"({args.num / seconds:.1f} images/s, {steps * -(-args.num // args.batch_size) / seconds:.1f} model calls/s)")
    print(f"grid: {grid}")
    if args.save_dir:
        count = len(viz.save_images(images, args.save_dir, tag))
        print(f"{count} PNGs: {args.save_dir}/{tag}_*.png")
    if args.npz:
        print(f"array {images.shape[0]}x{images.shape[2]}x{images.shape[3]}x{images.shape[1]} uint8: "
              f"{viz.save_npz(images, args.npz, npz_labels(labels, cfg.model.num_classes))}")
    if args.gif:
        gif = viz.save_denoising_gif(trajectory, args.gif, fps=args.fps, show_x0=args.gif_x0,
                                     max_images=args.gif_num)
        print(f"GIF ({len(trajectory)} frames): {gif}")
    return 0


def compare_weights(args, run_dir, ckpt, ema_model, scheduler, steps, image_shape, common) -> int:
    """The checkpoint's EMA and raw weights from the same noise, side by side."""
    from ddpm_ms import viz
    from ddpm_ms.sampling import sample_many
    from ddpm_ms.training import latest_checkpoint, load_model

    raw_model, _ = load_model(run_dir, ckpt, weights="raw")
    path = ckpt or latest_checkpoint(run_dir)
    grids = {}
    for name, model in (("EMA weights", ema_model), ("raw weights", raw_model)):
        images, _ = sample_many(model, scheduler, args.num, image_shape, num_inference_steps=steps, **common)
        grids[f"{name}\n{path.name}, {sampler_title(args.sampler, args.solver_order)} {steps} steps"] = images
    tag = f"ema-vs-raw-{path.stem}-{sampler_tag(args, steps)}"
    out = viz.save_comparison(grids, args.out or run_dir / "samples" / f"{tag}.png")
    print(f"EMA and raw weights of {path}: {out}")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from ddpm_ms.device import DeviceUnavailable
    from ddpm_ms.training import CheckpointMismatch, CheckpointUnreadable

    try:
        return run(args)
    except (ValueError, FileNotFoundError, CheckpointMismatch, CheckpointUnreadable, DeviceUnavailable) as e:
        print(f"sample.py: error: {e}", file=sys.stderr)
        return 2
