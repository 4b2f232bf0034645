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
import time
from datetime import datetime, timezone
from pathlib import Path

from ddpm_ms.cli.args import (GUIDANCE_INTERVAL_HELP, LAMBDA_MIN_CLIPPED_HELP, SOLVER_ORDER_HELP, log_snr_limit, _number,
                              timestep_list,
                              guidance_interval, non_negative_float, non_negative_int, positive_int,
                              sampler_flag_problem, sampler_help, unit_float)
from ddpm_ms.cli.steering import add_steering_flags, loss_guidance_terms
from ddpm_ms.metrics.evaluation import scored_datasets
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
    p.add_argument("--guidance-scale", type=non_negative_float, metavar="W",
                   help="class-conditional models (which draw every class equally often): the classifier-free "
                        "guidance weight (default: the model's sampling.guidance_scale; 1: no guidance)")
    p.add_argument("--guidance-rescale", type=unit_float, metavar="PHI",
                   help="with guidance: rescale its output toward the conditional one's spread, against "
                        "over-exposure (Lin et al. 2024; default: the model's sampling.guidance_rescale; 0: off)")
    p.add_argument("--guidance-interval", type=guidance_interval, metavar="LO,HI|all",
                   help=GUIDANCE_INTERVAL_HELP + " (default: the model's sampling.guidance_interval)")
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
    p.add_argument("--device", default="auto", choices=["auto", "Ascend", "GPU", "CPU"])
    p.add_argument("--mode", default="graph", choices=["graph", "pynative"])
    p.add_argument("--no-progress", action="store_true")
    add_steering_flags(p, editing=False)
    return p


def read_npz(path: Path):
    """(images, labels) of an .npz: arr_0 (or its only array), and `labels` or None."""
    import zipfile

    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        f = np.load(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e}); write one with sample.py --npz") from e
    if isinstance(f, np.ndarray):
        raise ValueError(f"{path} is a .npy array, not an .npz; save it with np.savez(path, images)")
    with f:
        others = [k for k in f.files if k != "labels"]
        key = "arr_0" if "arr_0" in others else (others[0] if len(others) == 1 else None)
        if key is None:
            raise ValueError(f"{path} holds {', '.join(f.files) or 'nothing'}; put the images under arr_0")
        images, labels = f[key], f["labels"] if "labels" in f.files else None
    if labels is not None:
        if labels.shape != (len(images),):
            raise ValueError(f"{path} holds {len(images)} images but labels of shape {labels.shape}; "
                             "save one class per image (np.savez(path, images, labels=labels))")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path} holds {labels.dtype} labels; save the classes as integers")
    return images, labels


REPORT_COLUMNS = (("step", "training step"), ("weights", "weights"), ("sampler", "sampler"), ("steps", "steps"),
                  ("spacing", "grid"), ("first_timestep", "first t"),
                  ("num", "images"), ("fid", "FID"), ("fid_floor", "floor"), ("inception_score", "IS"), ("precision", "precision"),
                  ("recall", "recall"), ("class_accuracy", "class acc."), ("seconds", "sampling s"), ("guidance_scale", "guidance"),
                  ("guidance_rescale", "rescale"), ("guidance_interval", "guided t"))


# Columns of class-conditional runs only, shown when some record has them.
CONDITIONAL_KEYS = ("guidance_scale", "guidance_rescale", "guidance_interval", "class_accuracy")


def report(run_dir: Path) -> str:
    """A run's evaluations as a Markdown table, grouped by image count (FIDs compare only within one)."""
    path = run_dir / "eval.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: evaluate the run first (evaluate.py --run {run_dir})")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    records.sort(key=lambda r: (r.get("num", 0), r.get("step") or 0, r.get("sampler", ""), r.get("steps", 0)))
    columns = [(key, title) for key, title in REPORT_COLUMNS
               if key not in CONDITIONAL_KEYS or any(key in r for r in records)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + " --- |" * len(columns)]
    for r in records:
        cells = ["" if r.get(key) is None else f"{r[key]:.3f}" if key in ("inception_score", "precision", "recall", "class_accuracy")
                 else "{}-{}".format(*r[key]) if key == "guidance_interval"
                 else f"{r[key]} {r['solver_order']}M" if key == "sampler" and "solver_order" in r
                 else str(r[key]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(record: dict, counts, class_names) -> str:
    """The per-class scores of a record with class_fid_floor as a Markdown table: each class's FID
    against its own floor, then all classes against the overall floor."""
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    def ratio(fid, floor):
        return "-" if fid is None or not floor else f"{fid / floor:.1f}"

    lines = ["| class | images | FID | floor | FID / floor | class acc. |", "|" + " --- |" * 6]
    for c, (fid, floor) in enumerate(zip(record["class_fid"], record["class_fid_floor"])):
        name = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"| {name} | {int(counts[c]):,} | {cell(fid, '.2f')} | {cell(floor, '.2f')} | {ratio(fid, floor)} "
                     f"| {cell(record['class_accuracy_by_class'][c], '.1%')} |")
    lines.append(f"| all classes | {record['num']:,} | {record['fid']:.2f} | {record['fid_floor']:.2f} "
                 f"| {ratio(record['fid'], record['fid_floor'])} | {record['class_accuracy']:.1%} |")
    return "\n".join(lines)


def class_counts(labels):
    """Images per class of the classifier, for class_fid_floor and the table."""
    import numpy as np

    from ddpm_ms.metrics.classifier import NUM_CLASSES

    return np.bincount(np.asarray(labels, np.int64), minlength=NUM_CLASSES)


def print_class_table(record: dict, labels, data: str) -> None:
    from ddpm_ms.data import class_names

    print(f"FID by class, each against its floor (as many real train images of the class; {data}):\n"
          + class_table(record, class_counts(labels), class_names(data)), file=sys.stderr)


def run(args) -> int:
    if args.report is not None:
        print(report(args.report))
        return 0
    if args.per_class and args.no_floor:
        raise ValueError("--per-class sets each class against its floor: drop --no-floor")
    from ddpm_ms.config import Config
    from ddpm_ms.files import append_jsonl
    from ddpm_ms.device import machine, select_device
    from ddpm_ms.metrics.evaluation import (FeatureExtractor, MetricsUnavailable, Reference,
                                            class_fid_floor, crop_margin, fid_floor, sample_and_score, score_images)
    from ddpm_ms.metrics.classifier import NUM_CLASSES

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
    device = select_device(args.device)
    jit = args.mode == "graph"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if args.npz is not None:
        images, labels = read_npz(args.npz)
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            # As for a model with more classes than the classifier: the overall scores only.
            print(f"{args.npz}: labels {labels.min()}..{labels.max()} are not the classifier's classes "
                  f"0..{NUM_CLASSES - 1}; scoring without per-class scores", file=sys.stderr)
            labels = None
        if args.per_class and labels is None:
            raise ValueError(f"--per-class needs the class of every image: {args.npz} holds no labels of the classifier's "
                             "classes (evaluate.py --save-npz keeps a class-conditional model's)")
        extractor = FeatureExtractor(args.data, jit=jit)
        reference = Reference.load(args.data, extractor, args.data_root)
        floors = class_fid_floor(extractor, reference, class_counts(labels), args.data_root) if args.per_class else None
        tic = time.perf_counter()
        record = {"npz": str(args.npz), **score_images(images, extractor, reference, labels)}
        record.update(score_seconds=round(time.perf_counter() - tic, 1), date=started)
        if args.per_class:
            record.update(fid_floor=fid_floor(extractor, reference, record["num"], args.data_root),
                          class_fid_floor=floors)
            print_class_table(record, labels, args.data)
        print(json.dumps(record))
        return 0

    from ddpm_ms import viz
    from ddpm_ms.pipeline import DiffusionPipeline

    if args.model is not None and args.weights != "auto":
        raise ValueError("--weights chooses between a run's EMA and raw weights; a pipeline holds one set")
    for flag, path in (("--run", args.run), ("--ckpt", args.ckpt)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    pipe = DiffusionPipeline.from_pretrained(args.model or args.run or args.ckpt, weights=args.weights)
    run_dir = None if args.model is not None else (args.run or pipe.checkpoint.parent.parent)
    data = args.data or pipe.dataset
    # A run's own data folder holds its test split too (MNIST is not embedded).
    run_root = Config.load(run_dir).data.root if run_dir is not None and (run_dir / "config.json").is_file() else None
    data_root = args.data_root or (run_root if data == pipe.dataset else None)
    if data not in scored_datasets():
        raise MetricsUnavailable(f"{pipe.source} learnt {data or 'an unnamed data set'}; FID here is measured for "
                                 f"{', '.join(scored_datasets())} (--data names one of them)")
    crop_margin(pipe.image_shape, data)  # a model of another image shape stops here, before any work
    for flag, value in (("--guidance-scale", args.guidance_scale), ("--guidance-rescale", args.guidance_rescale),
                        ("--guidance-interval", args.guidance_interval), ("--class-label", args.class_label)):
        if value is not None and not pipe.num_classes:
            raise ValueError(f"{flag} applies to class-conditional models; this one is unconditional")
    sampler = args.sampler or pipe.sampling.sampler
    if problem := sampler_flag_problem(sampler, solver_order=args.solver_order,
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
        pipe.class_index(args.class_label)  # an unknown class stops here, before any work
        if args.per_class:
            raise ValueError("--per-class scores every class in turn: drop --class-label")
    terms = loss_guidance_terms(args, pipe)
    pipe.jit = jit
    extractor = FeatureExtractor(data, jit=jit)
    reference = Reference.load(data, extractor, data_root)
    num, seed = args.num or 10_000, args.seed or 0
    # Before the sampling, so that too few real images of a class stop it early.
    floors = class_fid_floor(extractor, reference, class_counts(pipe.labels_for(num)), data_root) \
        if args.per_class else None
    step = f"step {pipe.checkpoint_step}, {pipe.loaded_weights} weights" if pipe.checkpoint else "pipeline"
    print(f"model: {pipe.checkpoint or pipe.source} ({step})  device: {device}  reference: {reference.name}",
          file=sys.stderr)
    record, images, labels = sample_and_score(
        pipe, extractor, reference, sampler, args.steps, num, seed, args.batch_size,
        progress=not args.no_progress, timesteps=args.timesteps, timestep_spacing=args.spacing,
        guidance_scale=args.guidance_scale, guidance_rescale=args.guidance_rescale,
        guidance_interval=args.guidance_interval, lambda_min_clipped=args.lambda_min_clipped,
        solver_order=args.solver_order, class_labels=args.class_label, guidance=terms)
    source = {"checkpoint": str(pipe.checkpoint), "step": pipe.checkpoint_step, "weights": pipe.loaded_weights} \
        if pipe.checkpoint else {"model": str(pipe.source)}
    if not args.no_floor:
        record["fid_floor"] = fid_floor(extractor, reference, num, data_root)
    if args.per_class:
        record["class_fid_floor"] = floors
        print_class_table(record, labels, data)
    record = {**source, **record, "device": device, "machine": machine(), "date": started}
    if args.save_npz:
        viz.save_npz(images, args.save_npz, labels)
    if args.grid:
        viz.save_grid(images[:64], args.grid)
    print(json.dumps(record))
    if not args.no_log and run_dir is not None:
        append_jsonl(run_dir / "eval.jsonl", record)
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from ddpm_ms.data import DataError
    from ddpm_ms.device import DeviceUnavailable
    from ddpm_ms.metrics.evaluation import MetricsUnavailable
    from ddpm_ms.checkpoint import CheckpointMismatch, CheckpointUnreadable

    try:
        return run(args)
    except DataError as e:
        print(f"evaluate.py: error: {e.for_flag('--data-root')}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, MetricsUnavailable, CheckpointMismatch, CheckpointUnreadable,
            DeviceUnavailable) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
