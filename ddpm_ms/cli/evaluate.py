"""python scripts/evaluate.py --model DIR | --run DIR | --ckpt PATH | --npz FILE [flags]: measure sample quality.

Draws --num images with --sampler in --steps model calls (or reads them from --npz), scores them
against the real test set in the committed classifier's feature space and prints one JSON object:
FID with its floor (the same number of real train images against the same test set), Inception
Score, precision, recall, class histogram, sampler, steps, num, seconds; for a
class-conditional model (or an .npz with `labels`) also class_accuracy and the FID of each class
(class_fid); --per-class adds each class's floor (class_fid_floor) and prints the per-class table
to stderr. For a run the record is also appended to <run>/eval.jsonl, so runs, samplers and step
counts can be compared later; export.py puts the newest one into a pipeline's model card. FID falls as the sample count grows: compare figures at the same --num only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddpm_ms import viz
from ddpm_ms.cli.args import (LAMBDA_MIN_CLIPPED_HELP, SOLVER_ORDER_HELP, _number, add_device_flags, add_guidance_flags,
                              log_snr_limit, non_negative_int, positive_int, sampler_flag_problem, sampler_help,
                              timestep_list)
from ddpm_ms.cli.command import command
from ddpm_ms.cli.steering import add_steering_flags, loss_guidance_terms
from ddpm_ms.config import Config
from ddpm_ms.device import select_device
from ddpm_ms.files import append_jsonl
from ddpm_ms.metrics.classifier import NUM_CLASSES
from ddpm_ms.metrics.evaluation import MetricsUnavailable, crop_margin, scored_datasets
from ddpm_ms.metrics.report import eval_log_table, evaluate_model, evaluate_npz
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.registry import SAMPLERS

at_least_4 = _number(int, "an integer", lambda v: v >= 4, "at least 4 (precision and recall use 3 nearest neighbours)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description="FID, Inception Score, precision and recall of "
                                "samples, against the real test set.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR_OR_NAME", help="a pipeline directory or a shipped pipeline's name")
    src.add_argument("--run", type=Path, help="run directory: its config.json and latest checkpoint")
    src.add_argument("--ckpt", type=Path, help="a checkpoint inside a run directory")
    src.add_argument("--npz", type=Path, help="score images made elsewhere: uint8 N x 28 x 28 [x 1] (cifar10: "
                     "N x 32 x 32 x 3 or N x 3 x 32 x 32) under arr_0 "
                     "(and, if they were drawn for classes, those N classes under labels)")
    src.add_argument("--report", type=Path, metavar="RUN",
                     help="print a run's eval.jsonl as a Markdown table (nothing is sampled)")
    p.add_argument("--data", choices=scored_datasets(),
                   help="which classifier and test set (default: the run's data set; required with --npz)")
    p.add_argument("--data-root", type=Path, help="folder with the data set's IDX files (default: embedded copy)")
    p.add_argument("--sampler", choices=SAMPLERS.names(),
                   help=sampler_help("default: the model's sampling.sampler (dpm++ for most presets)"))
    p.add_argument("--steps", type=positive_int, help="model calls: default all T for ddpm, 50 ddim, 20 dpm++ and dpm++sde")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"],
                   help="the sampler's timestep grid (default: trailing for dpm++, leading for the others; "
                        "see docs/sampling.md)")
    p.add_argument("--timesteps", type=timestep_list, metavar="T1,T2,...",
                   help="a custom grid instead of --steps/--spacing: training timesteps, descending (e.g. "
                        "990,900,700,500,300,100,0)")
    p.add_argument("--lambda-min-clipped", type=log_snr_limit, metavar="LOGSNR|none", help=LAMBDA_MIN_CLIPPED_HELP)
    p.add_argument("--solver-order", type=int, choices=[1, 2, 3], help=SOLVER_ORDER_HELP)
    add_guidance_flags(p, "default: the model's sampling.{field}")
    p.add_argument("--class-label", metavar="LABEL",
                   help="class-conditional models: draw this class (number or name) or 'none' (the unconditional "
                        "model) for every image; default: every class in turn")
    p.add_argument("--num", type=at_least_4, help="images to draw (default 10000)")
    p.add_argument("--seed", type=non_negative_int, help="noise seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="images per model call (default 250)")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                   help="auto (default): the EMA weights when the checkpoint has them")
    p.add_argument("--save-npz", type=Path, help="also keep the drawn images (uint8 N x H x W x C, arr_0; "
                   "a class-conditional model's classes under labels)")
    p.add_argument("--grid", type=Path, help="also write the first 64 images as a PNG grid")
    p.add_argument("--no-log", action="store_true", help="do not append to the run's eval.jsonl")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the floor (the FID of as many real train images; their features are cached)")
    p.add_argument("--per-class", action="store_true",
                   help="class-conditional models and labelled .npz files: also the floor of each class's FID "
                        "(as many real train images of the class against its test images; class_fid_floor) "
                        "and a Markdown table of the classes on stderr")
    add_device_flags(p, compiles="the model and classifier calls")
    p.add_argument("--no-progress", action="store_true")
    add_steering_flags(p, editing=False)
    return p


def check_flags(args) -> None:
    """The flag combinations argparse cannot refuse: a ValueError naming them."""
    if args.per_class and args.no_floor:
        raise ValueError("--per-class sets each class against its floor: drop --no-floor")
    if args.npz is not None and args.data is None:
        raise ValueError(f"--npz needs --data {'|'.join(scored_datasets())}: which classifier and test set to score "
                         "against")
    model_only = {"--sampler": args.sampler, "--steps": args.steps, "--spacing": args.spacing,
                  "--timesteps": args.timesteps,
                  "--lambda-min-clipped": args.lambda_min_clipped, "--solver-order": args.solver_order,
                  "--num": args.num,
                  "--guidance-scale": args.guidance_scale, "--guidance-rescale": args.guidance_rescale,
                  "--guidance-interval": args.guidance_interval, "--class-label": args.class_label,
                  "--color": args.color, "--prompt": args.prompt,
                  "--seed": args.seed, "--save-npz": args.save_npz, "--grid": args.grid,
                  "--weights": None if args.weights == "auto" else args.weights}
    given = [flag for flag, value in model_only.items() if value is not None]
    if args.npz is not None and given:
        raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a model (--model/--run/--ckpt), "
                         "not to --npz: the images are already drawn")


def load_model(args):
    """(pipeline, run directory or None, data set, data folder or None) of --model / --run / --ckpt:
    the data set is --data or the model's, its folder --data-root or, for the model's own data set,
    the run's (a run's data folder holds its test split too: MNIST is not embedded)."""
    if args.model is not None and args.weights != "auto":
        raise ValueError("--weights chooses between a run's EMA and raw weights; a pipeline holds one set")
    for flag, path in (("--run", args.run), ("--ckpt", args.ckpt)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    pipe = DiffusionPipeline.from_pretrained(args.model or args.run or args.ckpt, weights=args.weights)
    run_dir = None if args.model is not None else (args.run or pipe.checkpoint.parent.parent)
    data = args.data or pipe.dataset
    run_root = Config.load(run_dir).data.root if run_dir is not None and (run_dir / "config.json").is_file() else None
    return pipe, run_dir, data, args.data_root or (run_root if data == pipe.dataset else None)


def check_model_flags(args, pipe, data: str) -> None:
    """The flags that the loaded model shows to be wrong, before any work: a ValueError naming them."""
    if data not in scored_datasets():
        raise MetricsUnavailable(f"{pipe.source} learnt {data or 'an unnamed data set'}; FID here is measured for "
                                 f"{', '.join(scored_datasets())} (--data names one of them)")
    crop_margin(pipe.image_shape, data)  # a model of another image shape stops here
    for flag, value in (("--guidance-scale", args.guidance_scale), ("--guidance-rescale", args.guidance_rescale),
                        ("--guidance-interval", args.guidance_interval), ("--class-label", args.class_label)):
        if value is not None and not pipe.num_classes:
            raise ValueError(f"{flag} applies to class-conditional models; this one is unconditional")
    if problem := sampler_flag_problem(args.sampler or pipe.sampling.sampler, solver_order=args.solver_order,
                                       lambda_min_clipped=args.lambda_min_clipped):
        raise ValueError(problem)
    if args.timesteps is not None and (args.steps or args.spacing):
        raise ValueError("--timesteps is the whole grid: drop --steps and --spacing")
    T = pipe.diffusion.timesteps
    if args.steps and args.steps > T:
        raise ValueError(f"--steps {args.steps} is more than the model's {T} diffusion timesteps; use 1..{T}")
    if args.per_class and not 0 < pipe.num_classes <= NUM_CLASSES:
        raise ValueError(f"--per-class needs a class-conditional model with at most the classifier's {NUM_CLASSES} "
                         f"classes; this one has {pipe.num_classes or 'none'}")
    if args.class_label is not None:
        pipe.class_index(args.class_label)  # an unknown class stops here
        if args.per_class:
            raise ValueError("--per-class scores every class in turn: drop --class-label")


def log(line: str) -> None:
    print(line, file=sys.stderr)


def run(args) -> int:
    if args.report is not None:
        print(eval_log_table(args.report))
        return 0
    check_flags(args)
    select_device(args.device)
    jit = args.mode == "graph"
    if args.npz is not None:
        print(json.dumps(evaluate_npz(args.npz, args.data, args.data_root, args.per_class, jit, log)))
        return 0
    pipe, run_dir, data, data_root = load_model(args)
    check_model_flags(args, pipe, data)
    terms = loss_guidance_terms(args, pipe)
    pipe.jit = jit
    record, images, labels = evaluate_model(
        pipe, data, data_root, sampler=args.sampler or pipe.sampling.sampler, steps=args.steps,
        num=args.num or 10_000, seed=args.seed or 0, batch_size=args.batch_size, floor=not args.no_floor,
        per_class=args.per_class, jit=jit, progress=not args.no_progress, log=log, timesteps=args.timesteps,
        timestep_spacing=args.spacing, guidance_scale=args.guidance_scale, guidance_rescale=args.guidance_rescale,
        guidance_interval=args.guidance_interval, lambda_min_clipped=args.lambda_min_clipped,
        solver_order=args.solver_order, class_labels=args.class_label, guidance=terms)
    if args.save_npz:
        viz.save_npz(images, args.save_npz, labels)
    if args.grid:
        viz.save_grid(images[:64], args.grid)
    print(json.dumps(record))
    if not args.no_log and run_dir is not None:
        append_jsonl(run_dir / "eval.jsonl", record)
    return 0


main = command("evaluate.py", parser, run, data_flag="--data-root")
