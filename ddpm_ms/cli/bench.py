"""python scripts/bench.py train|sample|all [flags]: measure speed and memory.

Each measurement (graph or pynative mode, one batch size) runs in its own Python process, so
compile time and peak resident memory belong to that measurement alone; ddpm_ms.benchmark says
what is timed and what each figure means.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ddpm_ms.benchmark import DEFAULT_BATCH, DEFAULT_SAMPLERS, MODES, TRAIN_VARIANTS, Measurement, bench, bench_all
from ddpm_ms.cli.args import add_device_flags, set_model_fields
from ddpm_ms.cli.command import command
from ddpm_ms.presets import preset, reference_preset
from ddpm_ms.registry import BACKBONES, SAMPLERS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=["train", "sample", "all"],
                   help="train: the compiled train step; sample: each sampler's loop; "
                        "all: train at batch 32 and 128, sample at batch 64")
    p.add_argument("--batch-size", type=int, help="default: 32 for train, 64 for sample")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first (default 2)")
    p.add_argument("--variants", nargs="+", choices=list(TRAIN_VARIANTS), default=["default"],
                   help="train steps to time: plain (no clipping, no EMA), clip, ema1 (clipping + the EMA after "
                        "every update), default (clipping + the EMA every ema_update_every updates, as the "
                        "preset trains), accum4 (default with 4 micro-batches per update); several: each "
                        "one's img/s relative to the first")
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS.names(), default=list(DEFAULT_SAMPLERS),
                   help="samplers to time (default: ddpm ddim dpm++; dpm++sde costs what dpm++ does)")
    p.add_argument("--sample-steps", type=int,
                   help="steps per chain for every sampler (default: DDPM 1000, DDIM 50, DPM-Solver++ 20)")
    p.add_argument("--model", choices=BACKBONES.names(),
                   help="the backbone whose reference preset is measured (ddpm_ms.presets.reference_preset; "
                        "default unet)")
    p.add_argument("--preset", help="measure this preset instead (default: the --model's)")
    p.add_argument("--dim", type=int, help="override the (U-Net) preset's model width")
    add_device_flags(p)
    p.add_argument("--amp-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: the model's matrix products in bfloat16 as `--amp O1 --amp-dtype bfloat16` "
                        "trains (on CPU: in the C++ kernels, where the CPU has AVX512-BF16 or AMX)")
    p.add_argument("--profile", metavar="DIR",
                   help="instead of timing, profile 3 calls with MindSpore's profiler into DIR and "
                        "report the share of time per op type")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    return p


def settle_preset(args) -> None:
    """Settle which preset is measured (--preset, else the --model's reference preset); a ValueError
    when the flags contradict each other."""
    if args.preset is None:
        args.preset = reference_preset(args.model or "unet")
    model = preset(args.preset).model
    if args.model and args.model != model.arch:
        raise ValueError(f"--preset {args.preset} is a {model.arch} preset, not a {args.model} one; give --model or --preset")
    set_model_fields(model, args)


def run(args) -> int:
    settle_preset(args)
    if args.seconds < 0 or (args.batch_size is not None and args.batch_size < 1) or \
            (args.sample_steps is not None and args.sample_steps < 1):
        raise ValueError("--seconds must be >= 0, --batch-size and --sample-steps >= 1")
    job = Measurement(preset=args.preset, model_fields={"dim": args.dim} if args.dim else {}, seconds=args.seconds,
                      warmup=args.warmup, device=args.device, amp_dtype=args.amp_dtype, sample_steps=args.sample_steps,
                      profile=args.profile)
    options = {"modes": args.modes, "variants": args.variants, "samplers": args.samplers, "progress": not args.json}
    if args.task == "all":
        result = bench_all(job, **options)
    else:
        result = bench(replace(job, task=args.task, batch_size=args.batch_size or DEFAULT_BATCH[args.task]), **options)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


main = command("bench.py", parser, run)

if __name__ == "__main__":
    sys.exit(main())
