"""How far do small, barely visible changes move real images in our FID's feature space?

The FID of issue 6 is measured in the features of a small Fashion-MNIST classifier, not
Inception's. This prints the FID of --num (2,000) real train images against the test set after
perturbations a person would hardly notice, to give the floor (unperturbed) and the samples'
figures a scale, and after mirroring: a random half of the images mirrored is what a model
trained with random horizontal flips learns at best, and it is far from the test set, because
every shoe in Fashion-MNIST points the same way (the classifier calls mirrored boots bags):

    python research/fid_sensitivity.py [--num 10000] [--samples SAMPLES.npz]   # evaluate.py --save-npz output

With --samples it also scores those samples as they are and with their faint background
(values 1-8 of 255) set to 0, the real background value. Last, a table of what the classifier
makes of the mirrored test images, class by class.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", help="an npz of uint8 samples (arr_0), e.g. scripts/evaluate.py --save-npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num", type=int, default=2000, help="train images to perturb and score (default 2000)")
    args = ap.parse_args(argv)

    from ddpm_ms.data import class_names, load_idx_dataset
    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, score_images

    select_device("CPU")
    extractor = FeatureExtractor("fashion_mnist")
    reference = Reference.load("fashion_mnist", extractor)
    rng = np.random.default_rng(args.seed)
    num = args.num
    real = load_idx_dataset("fashion_mnist", split="train")[0][:num].astype(np.float32)
    background = real == 0

    def shifted(x, dx):
        out = np.zeros_like(x)
        out[:, :, dx:] = x[:, :, :-dx]
        return out

    rows = [(f"none (the floor at {num:,} images)", real)]
    rows += [(f"Gaussian noise, sd {s}/255", real + rng.normal(0, s, real.shape)) for s in (2, 4, 8)]
    rows += [(f"faint background, \\|N(0, {s})\\| on the zero pixels", real + background * np.abs(rng.normal(0, s, real.shape)))
             for s in (2, 4)]
    rows += [("shifted 1 px right", shifted(real, 1)), ("intensity x 0.9", real * 0.9)]
    half = rng.random(num) < 0.5
    rows += [("mirrored, a random half (what random_flip=True trains on)", np.where(half[:, None, None], real[:, :, ::-1], real)),
             ("mirrored, all", real[:, :, ::-1])]
    if args.samples:
        samples = np.load(args.samples)["arr_0"].reshape(-1, 28, 28)[:num].astype(np.float32)
        rows += [(f"samples ({os.path.basename(args.samples)})", samples),
                 ("the same, values 1-8 set to 0", np.where(samples <= 8, 0, samples))]
    bag = class_names("fashion_mnist").index("Bag")
    print(f"| {num:,} images, against the 10,000 test images | FID | zero pixels | called bags |\n| --- | --- | --- | --- |")
    for name, images in rows:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        scores = score_images(images, extractor, reference)
        print(f"| {name} | {scores['fid']:.1f} | {np.mean(images == 0):.0%} | {scores['class_histogram'][bag]:.1%} |",
              flush=True)
    test, labels = load_idx_dataset("fashion_mnist", split="test")
    verdict = extractor(np.ascontiguousarray(test[:, :, ::-1]))[1].argmax(axis=1)
    print("\n| mirrored test images of class | classified correctly | called bags |\n| --- | --- | --- |")
    for c, name in enumerate(class_names("fashion_mnist")):
        mine = verdict[labels == c]
        print(f"| {name} | {np.mean(mine == c):.0%} | {np.mean(mine == bag):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
