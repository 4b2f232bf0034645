"""python scripts/train_classifier.py --data DATA: train the FID feature extractor of a data set.

Writes the data set's classifier checkpoint, <data>_classifier.ckpt (atomically), and a JSON beside it with the test accuracy, the command
and the time it took, into $DDPM_MS_CLASSIFIER_DIR or else ./classifiers/: never into the package.
The evaluation uses it once $DDPM_MS_CLASSIFIER_DIR names its folder (else the committed classifier);
to replace a committed classifier, pass --out ddpm_ms/metrics/weights/<data>_classifier.ckpt in a checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds

from ddpm_ms.cli.args import positive_float, positive_int
from ddpm_ms.cli.command import command
from ddpm_ms.config import DataConfig
from ddpm_ms.device import select_device
from ddpm_ms.files import atomic_write
from ddpm_ms.metrics.classifier import FeatureClassifier
from ddpm_ms.metrics.evaluation import CLASSIFIER_ENV, data_shape, scored_datasets
from ddpm_ms.registry import DATASETS
from ddpm_ms.training.feature_classifier import accuracy, fit_classifier

USER_DIR = Path("classifiers")  # relative to the working directory, as train.py's runs/


def default_out(data: str) -> Path:
    """Where the checkpoint goes without --out: $DDPM_MS_CLASSIFIER_DIR, else ./classifiers/."""
    env = os.environ.get(CLASSIFIER_ENV)
    return (Path(env).expanduser() if env else USER_DIR) / DATASETS[data].classifier


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_classifier.py", description="Train the FID feature classifier.")
    p.add_argument("--data", required=True, choices=scored_datasets())
    p.add_argument("--root", type=Path, help="folder with the IDX files or CIFAR-10's binary archive (default: the "
                   "data root's copy)")
    p.add_argument("--epochs", type=positive_int, default=4)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--max-steps", type=positive_int, help="stop early (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=f"checkpoint (default: ${CLASSIFIER_ENV}/<data>_classifier.ckpt, else "
                   f"{USER_DIR}/<data>_classifier.ckpt)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> int:
    select_device("auto")
    ms.set_seed(args.seed)
    ds.config.set_seed(args.seed)
    entry, shape = DATASETS[args.data], data_shape(args.data)
    root = None if args.root is None else str(args.root)
    train = entry.load(DataConfig(args.data, root, random_flip=entry.flips), shape, args.batch_size, "train",
                       shuffle=True, with_labels=True)
    test = entry.load(DataConfig(args.data, root, random_flip=False), shape, 500, "test", shuffle=False,
                      with_labels=True)
    model = FeatureClassifier(in_channels=shape[0], image_size=shape[1])
    start = time.time()
    steps = fit_classifier(model, train, args.epochs, args.lr, args.max_steps, progress=not args.no_progress,
                           desc=f"classifier {args.data}")
    test_accuracy = accuracy(model, test)
    seconds = time.time() - start
    out = args.out or default_out(args.data)
    atomic_write(out, lambda tmp: ms.save_checkpoint(model, str(tmp)))
    info = {"data": args.data, "test_accuracy": round(test_accuracy, 4), "steps": steps, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "lr_schedule": "cosine", "seconds": round(seconds, 1),
            "command": "python scripts/train_classifier.py " + " ".join(args.argv)}
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    print(f"test accuracy {test_accuracy:.4f} after {steps} steps ({seconds / 60:.1f} min): {out}")
    if out.name == entry.classifier:
        print(f"the evaluation uses it with {CLASSIFIER_ENV}={out.resolve().parent}")
    return 0


main = command("train_classifier.py", parser, run, data_flag="--root")


if __name__ == "__main__":
    sys.exit(main())
