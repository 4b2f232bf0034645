"""Where does a class-conditional model's FID come from? A table of FID by class, against the floor.

Each class's samples are scored against that class's 1,000 real test images, next to the floor:
as many real train images of that class, drawn at random, scored the same way (a per-class FID
rests on few images, so it sits well above the overall one; compare it only with this floor).
The samples are .npz files written by `scripts/evaluate.py --save-npz` (or `sample.py --npz`)
from a class-conditional model, which keep the class of every image under `labels`:

    python benchmarks/class_fid.py RUN_A.npz [RUN_B.npz ...] [--data fashion_mnist]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def balanced_real(data: str, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` random train images of every class, in train-set order, with their labels."""
    from ddpm_ms.data.datasets import load_idx_dataset

    images, labels = load_idx_dataset(data, split="train")
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                   for c in range(int(labels.max()) + 1)]))
    return images[keep], labels[keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="+", help=".npz files with images (arr_0) and their classes (labels)")
    ap.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    args = ap.parse_args(argv)

    from ddpm_ms.cli.evaluate import read_npz
    from ddpm_ms.data.datasets import CLASS_NAMES
    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, score_features

    select_device("CPU")
    extractor = FeatureExtractor(args.data)
    reference = Reference.load(args.data, extractor)

    def scored(images, labels) -> dict:
        """score_features with labels, plus the class accuracy of each class."""
        features, probs = extractor(images)
        scores = score_features(features, probs, reference, labels)
        hits = np.argmax(probs, axis=1) == labels
        scores["accuracy_by_class"] = [float(np.mean(hits[labels == c])) for c in range(probs.shape[1])]
        return scores

    columns = []
    for path in args.samples:
        images, labels = read_npz(Path(path))
        if labels is None:
            ap.error(f"{path} has no labels: write it with evaluate.py --save-npz from a class-conditional model")
        columns.append((os.path.basename(path), np.bincount(labels).max(), scored(images, labels)))
    per_class = max(n for _, n, _ in columns)
    floor = scored(*balanced_real(args.data, per_class))
    names = CLASS_NAMES[args.data]
    head = f"| class | floor: FID ({per_class:,} train images) | class acc. | " + " | ".join(
        f"{name}: FID | class acc." for name, _, _ in columns)
    print(head + " |\n|" + " --- |" * (3 + 2 * len(columns)))
    for c, name in enumerate(names):
        cells = [f"{s['class_fid'][c]:.2f} | {s['accuracy_by_class'][c]:.1%}" for _, _, s in [("", 0, floor), *columns]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{s['fid']:.2f} | {s['class_accuracy']:.1%}" for _, _, s in [("", 0, floor), *columns]]
    print("| all classes | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
