"""python scripts/train.py [--preset NAME] [flags]: train a DDPM (default: the Fashion-MNIST U-Net preset).

Writes a run directory with config.json, log.csv, checkpoints/, samples/ (EMA grids), loss.png,
denoising.gif and summary.json. `--resume [RUN_DIR]` continues a run where its newest
checkpoint left it; `--init-from CKPT_OR_RUN` starts a new run from another run's weights.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ddpm_ms.cli.args import (add_device_flags, add_guidance_flags, add_model_flags, non_negative_float,
                               non_negative_int, positive_float, positive_int, set_model_fields, unit_float)
from ddpm_ms.cli.command import FlagError, command
from ddpm_ms.config import AMP_DTYPES, AMP_LEVELS, LR_SCHEDULES, OPTIMIZERS, Config
from ddpm_ms.presets import DEFAULT_PRESET, PRESETS, preset
from ddpm_ms.registry import DATASETS, SAMPLERS
from ddpm_ms.training import Trainer
from ddpm_ms.training.parallel import launch

RUNS = Path("runs")
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


def ema_decay(text):
    value = unit_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError("must be below 1 (0 turns EMA off), got 1.0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a denoising diffusion model.")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS),
                      help=f"data set and model preset (default: {DEFAULT_PRESET}, embedded in data/)")
    base.add_argument("--config", type=Path, metavar="JSON_OR_RUN",
                      help="start from a saved config.json (or a run directory's) instead of a preset")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="passes over the data (preset default)")
    length.add_argument("--steps", type=positive_int, help="optimizer updates; overrides epochs")
    p.add_argument("--batch-size", type=positive_int, help="images per micro-batch")
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--timesteps", type=positive_int, help="diffusion steps T (preset: 1000)")
    p.add_argument("--objective", choices=["eps", "x0", "v"],
                   help="what the model predicts: the noise, the clean image or v (preset default)")
    p.add_argument("--p2-gamma", type=non_negative_float,
                   help="p2 loss weighting (k + SNR)^-gamma (preset 0.5; 0 turns it off)")
    p.add_argument("--min-snr-gamma", type=non_negative_float,
                   help="Min-SNR-gamma loss weighting, e.g. 5 (Hang et al. 2023; default 0: off); "
                        "multiplies the p2 weight, so pair it with --p2-gamma 0")
    add_model_flags(p)
    c = p.add_argument_group("class conditioning (classifier-free guidance)")
    c.add_argument("--num-classes", type=non_negative_int,
                   help="condition on the data's labels (10 for Fashion-MNIST and MNIST); 0: unconditional")
    c.add_argument("--cond-drop-prob", type=unit_float, metavar="P",
                   help="share of training labels replaced by 'no class' (default 0.1)")
    add_guidance_flags(c, "sets the run's sampling.{field}, which its grids and evaluations and sample.py and "
                          "evaluate.py use; default: that of the preset, config or run it starts from")
    p.add_argument("--out", type=Path, help="run directory to create (default: runs/<preset>-<time>)")
    p.add_argument("--data", type=Path, help="data directory (default: the embedded copy under data/)")
    p.add_argument("--dataset", choices=DATASETS.names(),
                   help="data set kind, overriding the preset's (e.g. image_folder to fine-tune on photos)")
    p.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror a random half of the training images (preset default: on for photos, off for "
                        "Fashion-MNIST and MNIST, whose shoes face one way and whose digits are not symmetric)")
    add_device_flags(p, compiles="the train step", from_config=True)
    p.add_argument("--seed", type=non_negative_int)

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="adam (default) or adamw (decoupled weight decay)")
    g.add_argument("--weight-decay", type=non_negative_float, help="weight decay (default 0)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant, cosine (warm-up then cosine decay to 0; the Fashion-MNIST/MNIST presets') "
                        "or warmup-constant")
    g.add_argument("--warmup-steps", type=non_negative_int, help="linear warm-up updates (preset default)")
    g.add_argument("--clip-grad", type=non_negative_float, metavar="NORM",
                   help="clip the global gradient norm to NORM (default 1.0; 0 turns clipping off)")
    g.add_argument("--grad-accum", type=positive_int, metavar="K",
                   help="K micro-batches per update: the update of one K-times-larger batch (default 1)")
    g.add_argument("--ema-decay", type=ema_decay,
                   help="EMA decay of the sampled weights (preset default; 0 turns EMA off)")
    g.add_argument("--ema-update-every", type=positive_int, metavar="K",
                   help="average every K updates (preset default)")
    g.add_argument("--amp", choices=AMP_LEVELS,
                   help="mixed precision: O0 float32 (default), O1 convs/matmuls, O2 all but norms and softmax")
    g.add_argument("--amp-dtype", choices=AMP_DTYPES, help="low-precision type for O1/O2 (default float16)")

    r = p.add_argument_group("checkpoints and pictures")
    r.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue a run from its newest checkpoint (no RUN_DIR: --out, else the newest run "
                        "in runs/)")
    r.add_argument("--init-from", type=Path, metavar="CKPT_OR_RUN",
                   help="start from another run's weights (its EMA when it has one): fine-tuning")
    r.add_argument("--save-every", type=positive_int, help="updates between checkpoints")
    r.add_argument("--keep-last", type=non_negative_int,
                   help="step checkpoints kept (default 3, 0 keeps all; renamed or *.pin files are never removed)")
    r.add_argument("--pin-every", type=positive_int, help="also keep every checkpoint at a multiple of this step")
    r.add_argument("--sample-every", type=positive_int, help="updates between sample grids (default: each epoch)")
    r.add_argument("--sample-steps", type=positive_int, help="DDPM steps for grids and the GIF (default 250)")
    r.add_argument("--num-samples", type=positive_int, help="images per grid")
    e = p.add_argument_group("evaluation while training (28x28 Fashion-MNIST / MNIST models)")
    e.add_argument("--eval-every", type=non_negative_int,
                   help="updates between FID evaluations, logged in log.csv's fid column and eval.jsonl (default 0: none)")
    e.add_argument("--eval-num", type=positive_int, help="images per evaluation (default 1000)")
    e.add_argument("--eval-sampler", choices=SAMPLERS.names(),
                   help="sampler for evaluations (default dpm++)")
    e.add_argument("--eval-steps", type=positive_int, help="sampler steps for evaluations (default 20)")
    r.add_argument("--strict-data", action="store_true", help="a corrupt image is an error instead of skipped")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    dp = p.add_argument_group("data-parallel training (msrun; training/parallel.py)")
    dp.add_argument("--workers", type=positive_int,
                    help="train on N local processes launched with msrun, gradients averaged across them "
                         "(--batch-size is the global batch; each worker takes batch_size / N)")
    dp.add_argument("--distributed", action="store_true",
                    help="this process is one msrun worker: `msrun --worker_num=N --local_worker_num=N --join=True "
                         "python scripts/train.py --distributed ...` (what --workers runs)")
    return p


def _launch(workers: int, argv: list[str], out: Path, resume: bool) -> int:
    """train.py's own command line, less --workers, on `workers` msrun workers writing `out`."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            rest.append(arg)
    if not resume and not any(a == "--out" or a.startswith("--out=") for a in rest):
        rest += ["--out", str(out)]
    try:
        return launch(workers, rest, Path(out))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def resume_dir(args) -> Path:
    """The run directory --resume names, or --out, or the newest run under runs/."""
    if args.resume != "latest":
        return Path(args.resume)
    if args.out is not None:
        return args.out
    runs = sorted(RUNS.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if RUNS.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"--resume without a directory continues the newest run in {RUNS}/, and there is "
                                "none; pass --resume RUN_DIR")
    return runs[-1].parent


def base_config(args) -> Config:
    """The config the flags modify: the run's own (--resume), the source run's (--init-from
    without --preset: same model, same recipe) or the preset's."""
    if args.resume is not None:
        if args.preset is not None or args.config is not None:
            raise ValueError("--resume continues a run with its own config; drop --preset / --config")
        return Config.load(resume_dir(args))
    if args.config is not None:
        return Config.load(args.config)
    if args.init_from is not None and args.preset is None:
        source = args.init_from if args.init_from.is_dir() else args.init_from.parent.parent
        if (source / "config.json").is_file():
            cfg = Config.load(source)
            cfg.train.init_from = None  # set to the resolved checkpoint by the Trainer
            return cfg
    return preset(args.preset or DEFAULT_PRESET)


def warmup_note(t, total_steps: int) -> str | None:
    """A note when the learning-rate warm-up fills a quarter or more of the run (a preset's
    500-step warm-up in a run shortened with --steps 300, say), or None."""
    if t.warmup_steps * 4 < total_steps:
        return None
    what = (f"is longer than this {total_steps}-update run, so the rate never reaches its peak {t.lr:g}"
            if t.warmup_steps >= total_steps else
            f"fills {100 * t.warmup_steps / total_steps:.0f}% of this {total_steps}-update run")
    return (f"the learning-rate warm-up ({t.warmup_steps} updates) {what}; "
            f"--warmup-steps {max(1, total_steps // 15)} keeps the preset's proportion (1/15)")


def config_from_args(args) -> Config:
    cfg = base_config(args)
    t = cfg.train
    overrides = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "save_every": args.save_every, "sample_every": args.sample_every,
                 "sample_steps": args.sample_steps, "num_samples": args.num_samples, "optimizer": args.optimizer,
                 "weight_decay": args.weight_decay, "lr_schedule": args.lr_schedule,
                 "warmup_steps": args.warmup_steps, "grad_accum": args.grad_accum, "ema_decay": args.ema_decay,
                 "ema_update_every": args.ema_update_every, "amp": args.amp, "amp_dtype": args.amp_dtype,
                 "keep_last": args.keep_last, "pin_every": args.pin_every, "eval_every": args.eval_every,
                 "eval_num": args.eval_num, "eval_sampler": args.eval_sampler, "eval_steps": args.eval_steps}
    for name, value in overrides.items():
        if value is not None:
            setattr(t, name, value)
    if args.clip_grad is not None:
        t.clip_grad = args.clip_grad or None
    if args.epochs is not None:
        t.steps = None
        if args.sample_every is None:
            t.sample_every = None  # training by epochs: one grid per epoch
    t.device, t.mode = args.device or t.device, args.mode or t.mode
    if args.objective is not None:
        cfg.diffusion.objective = args.objective
    if args.p2_gamma is not None:
        cfg.diffusion.p2_gamma = args.p2_gamma
    if args.min_snr_gamma is not None:
        cfg.diffusion.min_snr_gamma = args.min_snr_gamma
    set_model_fields(cfg.model, args)
    if args.num_classes is not None:
        cfg.model.num_classes = args.num_classes
    if args.cond_drop_prob is not None:
        cfg.diffusion.cond_drop_prob = args.cond_drop_prob
    sampling = cfg.sampling
    if args.guidance_scale is not None:
        sampling.guidance_scale = args.guidance_scale
    if args.guidance_rescale is not None:
        sampling.guidance_rescale = args.guidance_rescale
    if args.guidance_interval is not None:
        sampling.guidance_interval = args.guidance_interval or None
    if args.timesteps is not None:
        cfg.diffusion.timesteps = args.timesteps
        if args.sample_steps is None:
            t.sample_steps = min(t.sample_steps, args.timesteps)
        if args.eval_steps is None:
            t.eval_steps = min(t.eval_steps, args.timesteps)
    if args.dataset is not None:
        cfg.data.dataset = args.dataset
        if args.data is None and args.resume is None:
            cfg.data.root = None
    if not DATASETS[cfg.data.dataset].class_names and cfg.model.num_classes and args.num_classes is None:
        # Unlabelled data (a folder of photos): a class-conditional base (the default preset, or a run given to
        # --init-from) trains unconditionally; the Trainer folds its "no class" embedding into the
        # time embedding, so fine-tuning starts from the model's unconditional behaviour.
        cfg.model.num_classes = 0
        if args.guidance_scale is None:
            sampling.guidance_scale = 1.0
        if args.guidance_rescale is None:
            sampling.guidance_rescale = 0.0
        if args.guidance_interval is None:
            sampling.guidance_interval = None
    if args.data is not None:
        cfg.data.root = str(args.data)
    if args.random_flip is not None:
        cfg.data.random_flip = args.random_flip
    if args.strict_data:
        cfg.data.strict = True
    return cfg.validate()


def run(args) -> int:
    if args.resume is not None and args.init_from is not None:
        raise FlagError("--resume continues a run; --init-from starts a new one from other weights: use one")
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        raise FlagError(str(e)) from None
    if args.resume is not None:
        out = resume_dir(args)
    else:
        out = args.out or RUNS / f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.workers is not None:
        if args.distributed:
            raise FlagError("--workers launches the workers; --distributed is what each of them runs: give one")
        return _launch(args.workers, args.argv, out, args.resume is not None)
    try:
        command = " ".join(["python scripts/train.py", *map(shlex.quote, args.argv)])
        trainer = Trainer(cfg, out, progress=not args.no_progress, resume=args.resume is not None, command=command,
                          init_from=args.init_from, distributed=args.distributed)
        start = (f"resuming at step {trainer.step} from {trainer.resumed_from}" if trainer.resumed_from else
                 f"starting from {trainer.initialised_from}" if trainer.initialised_from else "from scratch")
        where = f"worker {trainer.parallel.rank} of {trainer.parallel.world}  " if trainer.parallel else ""
        print(f"{where}run directory: {out}  device: {trainer.device}  mode: {cfg.train.mode}  "
              f"steps: {trainer.total_steps} ({trainer.steps_per_epoch} per epoch), {start}")
        if trainer.amp_note:
            print(f"note: {trainer.amp_note}")
        if (note := warmup_note(cfg.train, trainer.total_steps)) is not None:
            print(f"note: {note}")
        summary = trainer.fit()
    except KeyboardInterrupt:
        print(f"\nstopped without saving; the newest checkpoint in {out}/checkpoints is kept "
              f"(resume: python scripts/train.py --resume {out})", file=sys.stderr)
        return INTERRUPTED
    if summary.get("interrupted"):
        print(f"stopped at step {summary['steps']} ({summary['interrupted']}); saved {summary['checkpoint']}\n"
              f"resume with: python scripts/train.py --resume {out}")
        return INTERRUPTED
    speed = f", {summary['img_per_s']:.1f} images/s" if summary["img_per_s"] else ""
    print(f"done in {summary['train_wall_s'] / 60:.1f} min of training: final loss {summary['final_loss']:.4f}{speed}")
    print(f"samples ({summary['weights']} weights): {summary['grid']}\nGIF: {summary['gif']}\n"
          f"checkpoint: {summary['checkpoint']}")
    return 0


main = command("train.py", parser, run)
