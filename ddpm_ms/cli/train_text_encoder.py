"""python scripts/train_text_encoder.py [--denoiser DATA=MODEL ...] [flags]: train the text-image model
that --prompt guidance uses (ddpm_ms/textimage), and report its zero-shot accuracy.

The image encoder learns from each data set's training images and from a denoiser's x0 estimates of
them at random noise levels (--views of them per image): the images guidance will show it. The
default denoiser of Fashion-MNIST is the shipped pipeline; MNIST needs one (a run or pipeline
directory: --denoiser mnist=runs/mnist). A data set without a denoiser is trained on clean images
only. The weights shipped in ddpm_ms/textimage/weights were made by the command in their README.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import mindspore as ms
import numpy as np

from ddpm_ms.cli.args import non_negative_int, positive_float, positive_int
from ddpm_ms.cli.command import command
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.pipeline.diffusion_pipeline import DEFAULT_PRETRAINED
from ddpm_ms.registry import DATASETS
from ddpm_ms.textimage import TextImageModel
from ddpm_ms.textimage.model import TextImageConfig
from ddpm_ms.textimage.contrastive import LabelledImages, denoiser_views, phrase_accuracy, train, zero_shot_accuracy
from ddpm_ms.textimage.vocab import worded_datasets


def data_pair(text):
    """DATA=VALUE with DATA a data set whose classes have words (--data-root DATA=DIR, --denoiser DATA=MODEL)."""
    data, sep, value = text.partition("=")
    if not sep or data not in worded_datasets() or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not DATA=... with DATA one of {', '.join(worded_datasets())}")
    return data, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_text_encoder.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=worded_datasets(), default=list(worded_datasets()),
                   help="what it learns to name (default: every data set whose classes have words)")
    p.add_argument("--data-root", action="append", type=data_pair, default=[], metavar="DATA=DIR",
                   help="where a data set's files are (default: the usual data folders); repeatable")
    p.add_argument("--denoiser", action="append", type=data_pair, default=[], metavar="DATA=MODEL",
                   help="a pipeline, shipped pipeline name or run whose x0 estimates of DATA the image encoder "
                        f"also learns from (default: {DEFAULT_PRETRAINED}={DEFAULT_PRETRAINED}, the shipped one); "
                        "repeatable")
    p.add_argument("--views", type=non_negative_int, default=1, help="x0 estimates per training image (default 1)")
    p.add_argument("--steps", type=positive_int, default=3000, help="updates (default 3000)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", type=Path, required=True, help="directory to write the model into")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> int:


    if args.out.exists() and any(args.out.iterdir()):
        raise FileExistsError(f"{args.out} is not empty; choose another --out (models are never written over)")
    roots = dict(args.data_root)
    denoisers = {DEFAULT_PRETRAINED: DEFAULT_PRETRAINED, **dict(args.denoiser)}  # shipped pipelines are named after their data
    progress = not args.no_progress
    ms.set_seed(args.seed)
    loaded = {data: tuple(DATASETS[data].load_split(roots.get(data), split) for split in ("train", "test"))
              for data in args.datasets}  # every file checked before the long work starts
    parts, tests, lines = [], [], []
    for data, ((images, labels), (test_images, test_labels)) in loaded.items():
        clean = images.astype(np.float32) / 127.5 - 1
        parts.append(LabelledImages(data, clean, labels))
        test = LabelledImages(data, test_images.astype(np.float32) / 127.5 - 1, test_labels)
        tests.append(test)
        if data in denoisers and args.views:
            pipe = DiffusionPipeline.from_pretrained(denoisers[data])
            tic = time.perf_counter()
            for v in range(args.views):
                parts.append(LabelledImages(data, denoiser_views(pipe, clean, args.seed + v, progress=progress), labels))
            test_views = denoiser_views(pipe, test.images, 10_000 + args.seed, progress=progress)
            tests.append(LabelledImages(data + " x0 estimates", test_views, test_labels))
            lines.append(f"{data}: {args.views} x0-estimate view(s) per image from {pipe.source} "
                         f"({time.perf_counter() - tic:.0f} s)")
        else:
            lines.append(f"{data}: clean images only (no --denoiser {data}=MODEL)")
    print("\n".join(lines))
    model = TextImageModel(TextImageConfig(datasets=tuple(args.datasets)))
    tic = time.perf_counter()
    history = train(model, parts, args.steps, args.batch_size, args.lr, args.seed, progress=progress)
    minutes = (time.perf_counter() - tic) / 60
    report = [f"trained {args.steps} updates of {args.batch_size} in {minutes:.1f} min; loss "
              f"{history[0][1]:.3f} (first {history[0][0]}) -> {history[-1][1]:.3f}"]
    for test in tests:
        data = test.dataset.split(" ")[0]
        part = LabelledImages(data, test.images, test.labels)
        report.append(f"{test.dataset} test set, zero-shot accuracy: training phrases "
                      f"{zero_shot_accuracy(model, part, 'train'):.1%}, held-out phrases "
                      f"{zero_shot_accuracy(model, part, 'held_out'):.1%}, each held-out phrase alone "
                      f"{phrase_accuracy(model, part, 'held_out'):.1%}")
    print("\n".join(report))
    made_with = "python scripts/train_text_encoder.py " + " ".join(args.argv)
    card = ("# ddpm_ms text-image model\n\nA small contrastive text-image model (CLIP's recipe at toy scale, "
            "trained by ddpm_ms; not CLIP). Used by `--prompt` guidance.\n\nMade with:\n\n    " + made_with
            + "\n\n" + "\n".join(lines + report) + "\n")
    out = model.save(args.out, card)
    print(f"text-image model: {out}")
    return 0


main = command("train_text_encoder.py", parser, run, data_flag="--data-root DATA=")


if __name__ == "__main__":
    raise SystemExit(main())
