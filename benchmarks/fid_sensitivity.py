"""How far do small, barely visible changes move real images in our FID's feature space?

The FID of issue 6 is measured in the features of a small Fashion-MNIST classifier, not
Inception's. This prints the FID of 2,000 real train images against the test set after
perturbations a person would hardly notice, to give the floor (unperturbed) and the samples'
figures a scale:

    python benchmarks/fid_sensitivity.py [--samples SAMPLES.npz]   # evaluate.py --save-npz output

With --samples it also scores those samples as they are and with their faint background
(values 1-8 of 255) set to 0, the real background value.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM = 2000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", help="an npz of uint8 samples (arr_0), e.g. scripts/evaluate.py --save-npz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from ddpm_ms.data.datasets import load_idx_dataset
    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, score_images

    select_device("CPU")
    extractor = FeatureExtractor("fashion_mnist")
    reference = Reference.load("fashion_mnist", extractor)
    rng = np.random.default_rng(args.seed)
    real = load_idx_dataset("fashion_mnist", split="train")[0][:NUM].reshape(NUM, 28, 28).astype(np.float32)
    background = real == 0

    def shifted(x, dx):
        out = np.zeros_like(x)
        out[:, :, dx:] = x[:, :, :-dx]
        return out

    rows = [("none (the floor at 2,000 images)", real)]
    rows += [(f"Gaussian noise, sd {s}/255", real + rng.normal(0, s, real.shape)) for s in (2, 4, 8)]
    rows += [(f"faint background, \\|N(0, {s})\\| on the zero pixels", real + background * np.abs(rng.normal(0, s, real.shape)))
             for s in (2, 4)]
    rows += [("shifted 1 px right", shifted(real, 1)), ("intensity x 0.9", real * 0.9)]
    if args.samples:
        samples = np.load(args.samples)["arr_0"].reshape(-1, 28, 28)[:NUM].astype(np.float32)
        rows += [(f"samples ({os.path.basename(args.samples)})", samples),
                 ("the same, values 1-8 set to 0", np.where(samples <= 8, 0, samples))]
    print(f"| {NUM:,} images, against the 10,000 test images | FID | zero pixels |\n| --- | --- | --- |")
    for name, images in rows:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        fid = score_images(images, extractor, reference)["fid"]
        print(f"| {name} | {fid:.1f} | {np.mean(images == 0):.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
