"""python scripts/sample.py [--model DIR_OR_NAME | --run DIR | --ckpt PATH] [flags]: draw images.

The model is a pipeline directory (scripts/export.py writes one), a shipped pipeline's name (the
default: the default preset's trained weights, shipped with the package), a
training run or one of its checkpoints; everything is drawn through ddpm_ms.pipeline.

Writes a grid PNG and, on request, every image as its own PNG (--save-dir), all images as one
uint8 N x H x W x C array (--npz, key "arr_0", the layout FID tools read, with the class of each
image under "labels" for a class-conditional model) and the denoising GIF
(--gif). --compare draws the same noise with every sampler at its default steps (DDPM all T, DDIM
50, DPM-Solver++ and its SDE form 20) and puts the grids side by side. A class-conditional model draws every class
in turn (one per grid column) or the --class-label given, with classifier-free guidance
--guidance-scale.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ddpm_ms import viz
from ddpm_ms.cli.args import (LAMBDA_MIN_CLIPPED_HELP, SOLVER_ORDER_HELP, add_device_flags, add_guidance_flags,
                              log_snr_limit, sampler_flag_problem, sampler_help, timestep_list, non_negative_int,
                              positive_float, positive_int, unit_float)
from ddpm_ms.cli.command import command
from ddpm_ms.cli.steering import add_steering_flags, describe, editing_task, loss_guidance_terms
from ddpm_ms.device import select_device
from ddpm_ms.pipeline import DEFAULT_PRETRAINED, DiffusionPipeline
from ddpm_ms.pipeline.comparison import compare_samplers
from ddpm_ms.registry import SAMPLERS


def sampler_title(name: str, solver_order: int | None = None) -> str:
    """The sampler's name for people, with DPM-Solver++'s order when it is not 2 ("DPM-Solver++ 3M")."""
    title = SAMPLERS[name].title
    return title.replace("2M", f"{solver_order}M") if solver_order else title


def sampler_tag(args, steps: int) -> str:
    """The file-name part that says how images were drawn: dpmpp-20steps-seed0, dpmpp-3M-20steps-seed0.
    Order 2 is the default's, so `--solver-order 2` names its (identical) images as the default does."""
    order = f"-{args.solver_order}M" if args.solver_order not in (None, 2) else ""
    return f"{args.sampler.replace('+', 'p')}{order}-{steps}steps-seed{args.seed}"


def steering_tag(terms, edit) -> str:
    """The file-name part that says how images were steered: -color, -prompt, -img2img, -inpaint."""
    names = {"ColorGuidance": "color", "TextGuidance": "prompt"}
    parts = [names.get(type(term).__name__, "loss") for term in terms]
    if edit is not None:
        parts.append("inpaint" if edit.mask is not None else "img2img")
    return "".join("-" + p for p in parts)


class UsageError(ValueError):
    """An argument that only the loaded model can show to be wrong."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample.py", description="Draw images from a trained diffusion model.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="DIR_OR_NAME",
                     help="a pipeline directory (scripts/export.py) or a shipped pipeline's name; the default when "
                          f"no source is given: the shipped {DEFAULT_PRETRAINED!r}")
    src.add_argument("--run", type=Path, help="run directory: its config.json and latest checkpoint")
    src.add_argument("--ckpt", type=Path, help="a checkpoint file inside a run directory")
    p.add_argument("--mindir", action="store_true",
                   help="with --model DIR: sample the exported graph DIR/denoiser.mindir (export.py --format mindir)")
    p.add_argument("--sampler", choices=SAMPLERS.names(),
                   help=sampler_help("default: the model's sampling.sampler (dpm++ for most presets)"))
    p.add_argument("--steps", type=positive_int,
                   help="model calls: default all T for ddpm, 50 for ddim, 20 for dpm++ and dpm++sde")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"],
                   help="which timesteps the sampler visits: trailing (starts at T-1; the default for dpm++), "
                        "leading (starts at t = 950 for 20 steps; the default for the others), linspace; "
                        "see docs/sampling.md")
    p.add_argument("--timesteps", type=timestep_list, metavar="T1,T2,...",
                   help="a custom grid instead of --steps/--spacing: training timesteps, descending")
    p.add_argument("--lambda-min-clipped", type=log_snr_limit, metavar="LOGSNR|none", help=LAMBDA_MIN_CLIPPED_HELP)
    p.add_argument("--solver-order", type=int, choices=[1, 2, 3], help=SOLVER_ORDER_HELP)
    p.add_argument("--eta", type=unit_float, help="DDIM noise scale, 0 (deterministic, default) to 1")
    p.add_argument("--class-label", metavar="LABEL",
                   help="class-conditional models: draw this class only, by number or name (e.g. 7 or sneaker); "
                        "'none' draws unconditionally. Default: every class in turn, one per column")
    add_guidance_flags(p, "default: the model's sampling.{field}")
    p.add_argument("--num", type=positive_int, default=64, help="images to draw (default 64)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per model call (default 64)")
    p.add_argument("--out", type=Path, help="grid PNG (default: <run>/samples/<sampler>-<steps>steps-seed<S>.png, "
                   "or samples/... in the current directory for a pipeline)")
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
                   help="runs and checkpoints: auto (default) the EMA weights when the checkpoint has them, else "
                        "the raw ones; both: EMA and raw side by side from the same noise")
    p.add_argument("--no-clip", action="store_true", help="do not clamp the predicted x0 to [-1, 1]")
    add_device_flags(p, compiles="the model call")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_steering_flags(p)
    return p


def load_pipeline(args, weights: str | None = None):
    """The pipeline of --model / --run / --ckpt (the shipped default when none is given), and where
    its outputs go by default: the run's samples/ folder, else samples/ in the current directory."""
    source = args.model or args.run or args.ckpt or DEFAULT_PRETRAINED
    if args.model is not None and args.weights != "auto":
        raise UsageError("--weights chooses between a run's EMA and raw weights; a pipeline holds one set")
    if args.run is not None and not args.run.is_dir():
        raise FileNotFoundError(f"run directory {args.run} does not exist")
    if args.ckpt is not None and not args.ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist")
    if getattr(args, "mindir", False) and args.model is None:
        raise UsageError("--mindir samples a pipeline directory's exported graph: give --model DIR")
    pipe = DiffusionPipeline.from_pretrained(source, weights=weights or args.weights,
                                             mindir=getattr(args, "mindir", False))
    run_dir = args.run or (pipe.checkpoint.parent.parent if args.ckpt is not None else None)
    return pipe, (run_dir / "samples" if run_dir is not None else Path("samples"))


def npz_labels(labels, num_classes):
    """The labels an .npz keeps: one per image, none for unconditional samples or "no class" (label num_classes)."""
    if labels is None or np.all(np.asarray(labels) == num_classes):
        return None
    return labels


def class_labels(args, pipe):
    """The labels to draw for --num images from --class-label (None: unconditional model), after
    checking that the class and guidance flags fit the model."""
    if not pipe.num_classes:
        given = [f for f, v in (("--class-label", args.class_label), ("--guidance-scale", args.guidance_scale),
                                ("--guidance-rescale", args.guidance_rescale),
                                ("--guidance-interval", args.guidance_interval)) if v is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to class-conditional "
                             "models; this one is unconditional (train with --num-classes 10 for one)")
        return None
    try:
        return pipe.labels_for(args.num, args.class_label)
    except ValueError as e:
        raise UsageError(f"--class-label: {e}") from None


def resolve_steps(scheduler, steps, T) -> int:
    """--steps, or the scheduler's own default (all T for DDPM, at most 50 / 20 for DDIM / DPM-Solver++)."""
    steps = steps or scheduler.num_inference_steps
    if steps > T:
        raise UsageError(f"--steps {steps} is more than the model's {T} diffusion timesteps; use 1..{T}")
    return steps


def check_sampler_flags(args) -> None:
    """The sampling flags that contradict each other or --sampler (resolved from the model): a UsageError."""
    given = [flag for flag, value in (("--eta", args.eta), ("--solver-order", args.solver_order)) if value is not None]
    if given and args.compare:
        raise UsageError(f"--compare draws each sampler at its defaults: drop {' and '.join(given)}")
    if problem := sampler_flag_problem(args.sampler, eta=args.eta, solver_order=args.solver_order,
                                       lambda_min_clipped=None if args.compare else args.lambda_min_clipped):
        raise UsageError(problem)
    if args.compare and (args.steps or args.timesteps or args.save_dir or args.npz or args.gif):
        raise UsageError("--compare uses fixed step counts and writes one figure: drop --steps, --timesteps, "
                         "--save-dir, --npz and --gif")
    if args.timesteps is not None and (args.steps or args.spacing):
        raise UsageError("--timesteps is the whole grid: drop --steps and --spacing")
    if args.weights == "both" and (args.compare or args.save_dir or args.npz or args.gif):
        raise UsageError("--weights both writes one side-by-side figure: drop --compare, --save-dir, --npz and --gif")


def guidance_note(cfg) -> str:
    """How classifier-free guidance was set, for the summary line ("" without guidance)."""
    w, phi, interval = (cfg.scale, cfg.rescale, cfg.interval) if cfg is not None else (1, 0, None)
    return (f", guidance w = {w:g}" + (f" rescaled {phi:g}" if phi else "")
            + (f" at {interval[0]} <= t <= {interval[1]}" if interval else "")) if w != 1 else ""


def run(args) -> int:
    device = select_device(args.device)
    pipe, samples_dir = load_pipeline(args, weights="ema" if args.weights == "both" else None)
    args.sampler = args.sampler or pipe.sampling.sampler
    check_sampler_flags(args)
    T = pipe.diffusion.timesteps
    labels = class_labels(args, pipe)
    if labels is not None and args.class_label is None and args.nrow is None:
        args.nrow = pipe.num_classes  # one class per column
    cfg = None if labels is None else pipe.guidance(args.guidance_scale, args.guidance_rescale, args.guidance_interval)
    terms = loss_guidance_terms(args, pipe)
    pipe.jit = args.mode == "graph"
    task = editing_task(args, pipe)
    common = dict(batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress, class_labels=labels,
                  guidance=[cfg, *terms])
    weights = f", {pipe.loaded_weights} weights" if pipe.loaded_weights != "pipeline" else ""
    print(f"model: {pipe.source} ({pipe.dataset}, T = {T}{weights})  device: {device}  mode: {args.mode}")

    if args.compare:
        drawn = compare_samplers(task, args.num, clip_sample=not args.no_clip, timestep_spacing=args.spacing,
                                 lambda_min_clipped=args.lambda_min_clipped, **common)
        grids = {f"{sampler_title(d.sampler)}, {d.steps} steps\n{d.seconds:.1f} s for {args.num} images": d.images
                 for d in drawn}
        out = viz.save_comparison(grids, args.out or samples_dir / f"compare-seed{args.seed}.png")
        print("\n".join(f"{sampler_title(d.sampler):>19}: {d.steps:4d} steps, {d.seconds:6.1f} s, "
                        f"{args.num / d.seconds:6.1f} images/s" for d in drawn))
        print(f"comparison: {out}")
        return 0

    scheduler = pipe.scheduler(args.sampler, args.eta, clip_sample=not args.no_clip, timestep_spacing=args.spacing,
                               lambda_min_clipped=args.lambda_min_clipped, solver_order=args.solver_order)
    if args.timesteps is not None:
        scheduler.set_timesteps(timesteps=args.timesteps)
        steps = scheduler.num_inference_steps
    else:
        steps = resolve_steps(scheduler, args.steps or (pipe.sampling.steps if args.sampler == pipe.sampling.sampler
                                                        else None), T)
    if args.weights == "both":
        return compare_weights(args, task, scheduler, steps, samples_dir, common)
    gif_every = args.gif_every or max(1, steps // 50)
    tic = time.perf_counter()
    grid_args = {} if args.timesteps is not None else {"num_inference_steps": steps}  # a --timesteps grid is set
    out = task(args.num, scheduler=scheduler, **grid_args, return_trajectory=gif_every if args.gif else False,
               **common)
    images, trajectory = out.images, out.trajectory
    seconds = time.perf_counter() - tic
    tag = sampler_tag(args, steps) + steering_tag(terms, task.edit)
    grid = viz.save_grid(images, args.out or samples_dir / f"{tag}.png", nrow=args.nrow)
    print(f"{args.num} images with {sampler_title(args.sampler, args.solver_order)} in {steps} steps"
          f"{guidance_note(cfg)}: "
          f"{seconds:.1f} s ({args.num / seconds:.1f} images/s, "
          f"{steps * -(-args.num // args.batch_size) / seconds:.1f} model calls/s){describe(args, terms)}")
    print(f"grid: {grid}")
    if args.save_dir:
        count = len(viz.save_images(images, args.save_dir, tag))
        print(f"{count} PNGs: {args.save_dir}/{tag}_*.png")
    if args.npz:
        print(f"array {images.shape[0]}x{images.shape[2]}x{images.shape[3]}x{images.shape[1]} uint8: "
              f"{viz.save_npz(images, args.npz, npz_labels(out.labels, pipe.num_classes))}")
    if args.gif:
        gif = viz.save_denoising_gif(trajectory, args.gif, fps=args.fps, show_x0=args.gif_x0,
                                     max_images=args.gif_num)
        print(f"GIF ({len(trajectory)} frames): {gif}")
    return 0


def compare_weights(args, ema_pipe, scheduler, steps, samples_dir, common) -> int:
    """A run checkpoint's EMA and raw weights from the same noise, side by side."""
    if args.model is not None or ema_pipe.checkpoint is None:
        raise UsageError("--weights both compares a run's EMA and raw weights: pass --run or --ckpt")
    raw_pipe = DiffusionPipeline.from_pretrained(ema_pipe.checkpoint, weights="raw")
    raw_pipe.jit = ema_pipe.jit
    raw_pipe = editing_task(args, raw_pipe)
    path, grids = ema_pipe.checkpoint, {}
    for name, pipe in (("EMA weights", ema_pipe), ("raw weights", raw_pipe)):
        images = pipe(args.num, scheduler=scheduler, num_inference_steps=steps, **common).images
        grids[f"{name}\n{path.name}, {sampler_title(args.sampler, args.solver_order)} {steps} steps"] = images
    tag = f"ema-vs-raw-{path.stem}-{sampler_tag(args, steps)}"
    out = viz.save_comparison(grids, args.out or samples_dir / f"{tag}.png")
    print(f"EMA and raw weights of {path}: {out}")
    return 0


main = command("sample.py", parser, run)
