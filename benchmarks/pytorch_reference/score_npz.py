"""Score research/recipe_search.py's samples with the project's classifier (MindSpore, CPU).

    python benchmarks/pytorch_reference/score_npz.py OUT/*.npz [--num 1000] [--json results.jsonl]

Each .npz holds uint8 (N, 28, 28) arrays, one per sampler, and "meta": the recipe as JSON.
Prints one row per recipe and sampler: FID against the Fashion-MNIST test set (the same figure
scripts/evaluate.py reports), IS, precision, recall and the share of the most frequent class.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz", nargs="+", type=Path)
    p.add_argument("--num", type=int, help="score the first N samples only (default: all)")
    p.add_argument("--json", type=Path, help="append each row here as JSON")
    args = p.parse_args(argv)

    from ddpm_ms.device import select_device
    from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, score_images
    select_device("CPU")
    extractor = FeatureExtractor("fashion_mnist")
    reference = Reference.load("fashion_mnist", extractor)
    print(f"{'recipe':>16} {'sampler':>12} {'num':>6} {'cpu cost':>8} {'FID':>8} {'IS':>6} {'prec':>6} "
          f"{'recall':>6} {'top class':>9} {'loss':>7}")
    for path in args.npz:
        with np.load(path) as arrays:
            meta = json.loads(str(arrays["meta"])) if "meta" in arrays.files else {}
            for key in (k for k in arrays.files if k not in ("meta", "labels")):
                images = arrays[key][:args.num] if args.num else arrays[key]
                s = score_images(images, extractor, reference)
                hist = np.asarray(s.get("class_histogram", [0]))
                top = float(hist.max() / max(hist.sum(), 1e-9)) if hist.size else float("nan")
                print(f"{path.stem:>16} {key:>12} {len(images):6d} {meta.get('cpu_cost', float('nan')):8.2f} "
                      f"{s['fid']:8.1f} {s.get('inception_score', float('nan')):6.2f} "
                      f"{s.get('precision', float('nan')):6.3f} {s.get('recall', float('nan')):6.3f} "
                      f"{top:9.3f} {meta.get('final_loss', float('nan')):7.4f}", flush=True)
                if args.json:
                    row = {"recipe": path.stem, "sampler": key, "num": len(images), **s,
                           **{k: v for k, v in meta.items() if k != "loss_curve"}}
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
