"""Where does a class-conditional model's FID come from? A table of FID by class, against the floor.

Each class's samples are scored against that class's real test images (1,000 in Fashion-MNIST), next to the floor:
as many real train images of that class, drawn at random, scored the same way (a per-class FID
rests on few images, so it sits well above the overall one; compare it only with this floor).
The classifier was trained on the train split, so the floor's class accuracy is its training
accuracy, a little above its test accuracy. Every file must hold as many images of each class.
The samples are .npz files written by `scripts/evaluate.py --save-npz` (or `sample.py --npz`)
from a class-conditional model, which keep the class of every image under `labels`:

    python benchmarks/class_fid.py RUN_A.npz [RUN_B.npz ...] [--data mnist --data-root DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def balanced_real(data: str, per_class: int, root=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` random train images of every class, in train-set order, with their labels."""
    from ddpm_ms.data.datasets import load_idx_dataset

    images, labels = load_idx_dataset(data, root, "train")
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    if per_class > min(map(len, members)):
        raise ValueError(f"the train split holds only {min(map(len, members))} images of some class, "
                         f"fewer than the samples' {per_class}")
    keep = np.sort(np.concatenate([rng.permutation(m)[:per_class] for m in members]))
    return images[keep], labels[keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="+", help=".npz files with images (arr_0) and their classes (labels)")
    ap.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    ap.add_argument("--data-root", type=Path, help="folder with the IDX files (default: the embedded copy)")
    args = ap.parse_args(argv)

    from ddpm_ms.cli.evaluate import read_npz
    from ddpm_ms.data import DataError
    from ddpm_ms.data.datasets import CLASS_NAMES
    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, MetricsUnavailable, Reference, score_features, to_uint8_gray

    classes = len(CLASS_NAMES[args.data])
    samples = []
    for path in args.samples:  # every file is checked before anything is loaded or scored
        try:
            images, labels = read_npz(Path(path))
            images = to_uint8_gray(images)
        except (ValueError, FileNotFoundError) as e:
            ap.error(f"{path}: {e}" if path not in str(e) else str(e))
        if labels is None:
            ap.error(f"{path} has no labels: write it with evaluate.py --save-npz from a class-conditional model")
        if len(labels) == 0:
            ap.error(f"{path} holds no images")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= classes:
            ap.error(f"{path} holds labels {labels.min()}..{labels.max()}; {args.data} has the classes 0..{classes - 1}"
                     " (a model with more classes is scored without them: see evaluate.py)")
        counts = np.bincount(labels, minlength=classes)
        if counts.min() != counts.max():
            ap.error(f"{path} holds {counts.tolist()} images of the classes 0..{classes - 1}; "
                     f"per-class FIDs compare at equal counts: draw every class equally often")
        samples.append((os.path.basename(path), int(counts[0]), images, labels))
    per_class = {n for _, n, _, _ in samples}
    if len(per_class) > 1:
        ap.error(f"the files hold {sorted(per_class)} images per class; compare files of one size")
    per_class = per_class.pop()

    try:
        real = balanced_real(args.data, per_class, args.data_root)  # the floor's images, before the classifier
        select_device("CPU")
        extractor = FeatureExtractor(args.data)
        reference = Reference.load(args.data, extractor, args.data_root)
    except DataError as e:
        ap.error(e.for_flag("--data-root"))
    except (ValueError, MetricsUnavailable) as e:
        ap.error(str(e))

    def scored(images, labels) -> dict:
        """score_features with labels, plus the class accuracy of each class."""
        features, probs = extractor(images)
        scores = score_features(features, probs, reference, labels)
        hits = np.argmax(probs, axis=1) == labels
        scores["accuracy_by_class"] = [float(np.mean(hits[labels == c])) for c in range(probs.shape[1])]
        return scores

    columns = [scored(*real)] + [scored(images, labels) for _, _, images, labels in samples]  # the floor first
    head = f"| class | floor: FID ({per_class:,} train images) | class acc. | " + " | ".join(
        f"{name}: FID | class acc." for name, _, _, _ in samples)
    print(head + " |\n|" + " --- |" * (1 + 2 * len(columns)))
    fid = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731  (fewer than 2 images of a class)
    for c, name in enumerate(CLASS_NAMES[args.data]):
        print(f"| {name} | " + " | ".join(f"{fid(s['class_fid'][c])} | {s['accuracy_by_class'][c]:.1%}"
                                         for s in columns) + " |")
    print("| all classes | " + " | ".join(f"{s['fid']:.2f} | {s['class_accuracy']:.1%}" for s in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
