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

from ddpm_ms.cli.args import positive_float, positive_int
from ddpm_ms.config import DataConfig
from ddpm_ms.metrics.evaluation import CLASSIFIER_ENV, data_shape, scored_datasets
from ddpm_ms.registry import DATASETS

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


def evaluate(model, dataset) -> float:
    """Top-1 accuracy over a labelled pipeline."""
    model.set_train(False)
    correct = total = 0
    for x, y in dataset.create_tuple_iterator(num_epochs=1):
        correct += int((model(x).asnumpy().argmax(axis=1) == y.asnumpy()).sum())
        total += int(y.shape[0])
    model.set_train(True)
    return correct / max(total, 1)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn, ops
    from tqdm.auto import tqdm

    from ddpm_ms.data import DataError
    from ddpm_ms.device import select_device
    from ddpm_ms.files import atomic_write
    from ddpm_ms.metrics.classifier import FeatureClassifier

    select_device("auto")
    ms.set_seed(args.seed)
    ds.config.set_seed(args.seed)
    entry, shape = DATASETS[args.data], data_shape(args.data)
    root = None if args.root is None else str(args.root)
    try:
        train = entry.load(DataConfig(args.data, root, random_flip=entry.flips), shape, args.batch_size, "train",
                           shuffle=True, with_labels=True)
        test = entry.load(DataConfig(args.data, root, random_flip=False), shape, 500, "test", shuffle=False,
                          with_labels=True)
    except DataError as e:
        print(f"error: {e.for_flag('--root')}", file=sys.stderr)
        return 2
    from ddpm_ms.training.optim import WarmupSchedule

    channels, size, _ = shape
    model = FeatureClassifier(in_channels=channels, image_size=size)
    per_epoch = train.get_dataset_size()
    total = min(args.epochs * per_epoch, args.max_steps or args.epochs * per_epoch)
    # Cosine decay to 0 after a short warm-up: a constant rate fell short of the target (docs/evaluation.md).
    schedule = WarmupSchedule(args.lr, "cosine", warmup_steps=min(100, total // 10), total_steps=total)
    optimizer = nn.Adam(model.trainable_params(), learning_rate=schedule)
    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):
        return loss_fn(model(x), y)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        return ops.depend(loss, optimizer(grads))

    start, steps = time.time(), 0
    model.set_train(True)
    with tqdm(total=total, desc=f"classifier {args.data}", disable=args.no_progress) as bar:
        for _ in range(args.epochs):
            for x, y in train.create_tuple_iterator(num_epochs=1):
                loss = float(step(x, y).asnumpy())
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if steps >= total:
                    break
            if steps >= total:
                break
    accuracy = evaluate(model, test)
    seconds = time.time() - start
    out = args.out or default_out(args.data)
    atomic_write(out, lambda tmp: ms.save_checkpoint(model, str(tmp)))
    info = {"data": args.data, "test_accuracy": round(accuracy, 4), "steps": steps, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "lr_schedule": "cosine", "seconds": round(seconds, 1),
            "command": "python scripts/train_classifier.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    print(f"test accuracy {accuracy:.4f} after {steps} steps ({seconds / 60:.1f} min): {out}")
    if out.name == entry.classifier:
        print(f"the evaluation uses it with {CLASSIFIER_ENV}={out.resolve().parent}")
    return 0
