"""Score a class-conditional model guided by a weaker model of the same task (autoguidance).

Karras et al. 2024 ("Guiding a Diffusion Model with a Bad Version of Itself") replace the
unconditional model of classifier-free guidance by a weaker model: output = bad + w (good - bad),
both given the class. Their weaker model is smaller and trained for a fraction of the time; the
cheapest stand-in here is an early checkpoint of the same run. `--guide-null` gives the guide
"no class", i.e. classifier-free guidance whose unconditional half comes from the guide:

    python research/autoguidance.py --run RUN --guide RUN/checkpoints/step_0002000.ckpt \\
        --num 2000 --guidance-scale 2 --guidance-interval 0,700

The pipeline guides with "no class" only, so this script drives the pipeline's scheduler with its
own short loop over the two models. It draws as evaluate.py does (every class equally often, batch
b from noise stream b of --seed, so --guide-null with the model itself as its guide reproduces
evaluate.py's images), scores the images against the test set and prints one JSON record with
"guide" (its source, step and label); nothing is appended to the run's eval.jsonl. The results on
the preset are in docs/experiments/guidance.md ("Guiding with an earlier checkpoint").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parser() -> argparse.ArgumentParser:
    from ddpm_ms.cli.args import guidance_interval, non_negative_float, non_negative_int, positive_int
    from ddpm_ms.registry import SAMPLERS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a pipeline directory or a shipped pipeline's name")
    src.add_argument("--run", type=Path, help="a run directory (its newest checkpoint)")
    src.add_argument("--ckpt", type=Path, help="a checkpoint inside a run directory")
    ap.add_argument("--guide", required=True, help="the guiding (weaker) model: a checkpoint, run or pipeline directory "
                                                   "with the same classes, image shape and diffusion schedule")
    ap.add_argument("--guide-null", action="store_true", help='give the guide "no class" (CFG-like)')
    ap.add_argument("--guidance-scale", type=non_negative_float, metavar="W",
                    help="w (default: the model's sampling.guidance_scale; 1: the model alone)")
    ap.add_argument("--guidance-interval", type=guidance_interval, metavar="LO,HI|all",
                    help="guide only at timesteps LO <= t <= HI (default: the model's sampling.guidance_interval)")
    ap.add_argument("--sampler", choices=SAMPLERS.names(), help="default: the model's")
    ap.add_argument("--steps", type=positive_int, help="default: the model's (20 for dpm++)")
    ap.add_argument("--num", type=positive_int, default=10_000, help="images to draw (default 10000)")
    ap.add_argument("--seed", type=non_negative_int, default=0)
    ap.add_argument("--batch-size", type=positive_int, default=250)
    ap.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"], help="for runs and checkpoints")
    ap.add_argument("--data-root", type=Path, help="folder with the data set's IDX files (default: embedded copy)")
    ap.add_argument("--no-floor", action="store_true", help="skip the FID floor")
    ap.add_argument("--device", default="auto", choices=["auto", "Ascend", "GPU", "CPU"])
    ap.add_argument("--no-progress", action="store_true")
    return ap


def draw(pipe, guide, scheduler, num: int, seed: int, batch_size: int, w: float, interval, guide_null: bool,
         progress: bool = True):
    """`num` images of `pipe`'s model guided by `guide`'s: (images in [-1, 1], labels)."""
    import mindspore as ms
    from mindspore import ops
    from tqdm.auto import tqdm

    from ddpm_ms.sampling import compiled, noise_generator

    good, bad = compiled(pipe.model), compiled(guide.model)
    labels = pipe.labels_for(num)  # every class in turn
    lo, hi = interval or (0, pipe.diffusion.timesteps)
    images = []
    for b, start in enumerate(tqdm(range(0, num, batch_size), desc="batches", disable=not progress)):
        y_np = labels[start:start + batch_size]
        shape = (len(y_np), *pipe.image_shape)
        normal = noise_generator(seed, stream=b)  # the pipeline's noise for this seed and batch
        x = normal(shape)
        y = ms.Tensor(y_np)
        y_guide = ms.Tensor(np.full(len(y_np), pipe.num_classes, np.int32)) if guide_null else y
        ones = ops.ones((len(y_np),), ms.float32)
        scheduler.reset()
        for t in scheduler.timesteps:
            t = int(t)
            out = good(x, ones * float(t), y)
            if w != 1.0 and lo <= t <= hi:
                weak = bad(x, ones * float(t), y_guide)
                out = weak + w * (out - weak)
            noise = normal(shape) if scheduler.needs_noise(t) else None
            x = scheduler.step(out, t, x, noise=noise).prev_sample
        images.append(x.asnumpy())
    return np.concatenate(images), labels


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)

    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, fid_floor, score_images
    from ddpm_ms.pipeline import DiffusionPipeline

    device = select_device(args.device)
    try:
        pipe = DiffusionPipeline.from_pretrained(args.model or args.run or args.ckpt, weights=args.weights)
        guide = DiffusionPipeline.from_pretrained(args.guide, weights=args.weights)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    if not pipe.num_classes:
        ap.error("autoguidance here needs a class-conditional model; this one is unconditional")
    mismatch = [name for name, a, b in (("classes", pipe.num_classes, guide.num_classes),
                                        ("image shape", pipe.image_shape, guide.image_shape),
                                        ("diffusion", pipe.diffusion, guide.diffusion)) if a != b]
    if mismatch:
        ap.error(f"--guide {args.guide} differs from the model in its {', '.join(mismatch)}")
    cfg = pipe.guidance(args.guidance_scale, 0.0, args.guidance_interval)
    w, interval = cfg.scale, cfg.interval
    sampler = args.sampler or pipe.sampling.sampler
    scheduler = pipe.scheduler(sampler)
    steps = args.steps or (pipe.sampling.steps if sampler == pipe.sampling.sampler else None)
    if steps:
        scheduler.set_timesteps(int(steps))

    extractor = FeatureExtractor(pipe.dataset)
    reference = Reference.load(pipe.dataset, extractor, args.data_root)
    tic = time.perf_counter()
    images, labels = draw(pipe, guide, scheduler, args.num, args.seed, args.batch_size, w, interval, args.guide_null,
                          progress=not args.no_progress)
    seconds = time.perf_counter() - tic
    record = {"checkpoint": str(pipe.checkpoint), "step": pipe.checkpoint_step, "weights": pipe.loaded_weights} \
        if pipe.checkpoint else {"model": str(pipe.source)}
    record.update(score_images(images, extractor, reference, labels))
    if not args.no_floor:
        record["fid_floor"] = fid_floor(extractor, reference, args.num, args.data_root)
    record.update(sampler=sampler, steps=len(scheduler.timesteps), spacing=scheduler.timestep_spacing,
                  **({"lambda_min_clipped": scheduler.lambda_min_clipped}
                     if np.isfinite(getattr(scheduler, "lambda_min_clipped", -np.inf)) else {}),
                  first_timestep=int(scheduler.timesteps[0]), seed=args.seed, seconds=round(seconds, 1),
                  guidance_scale=w, **({"guidance_interval": list(interval)} if interval and w != 1 else {}),
                  guide={"source": str(guide.checkpoint or guide.source), "step": guide.checkpoint_step,
                         "weights": guide.loaded_weights, "label": "null" if args.guide_null else "class"},
                  device=device)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
