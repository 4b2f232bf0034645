"""PyTorch mirror of ddpm_ms.metrics.classifier.FeatureClassifier, for scoring research/recipe_search.py's
samples where MindSpore is not installed (a GPU machine). Same layers, eval-mode BatchNorm.

    python benchmarks/pytorch_reference/classifier_torch.py export OUT.npz   # MindSpore side: weights -> npz
    $TORCH_VENV/bin/python benchmarks/pytorch_reference/classifier_torch.py check OUT.npz IMAGES.npz
        # features agree with the MindSpore extractor's (run `export` with --features IMAGES.npz first)
"""
from __future__ import annotations

import sys

import numpy as np

BN_EPS = 1e-5  # mindspore.nn.BatchNorm2d's default


def export(out_path: str, data: str = "fashion_mnist", features_of: str | None = None) -> None:
    """Write the committed classifier's weights (and, optionally, the MindSpore features of the
    images in `features_of`'s first array) as one npz."""
    import mindspore as ms

    from ddpm_ms.metrics.evaluation import FeatureExtractor, classifier_weights
    arrays = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(classifier_weights(data))).items()}
    if features_of:
        with np.load(features_of) as f:
            images = f[[k for k in f.files if k not in ("meta", "labels")][0]][:2000]
        feats, probs = FeatureExtractor(data)(images)
        arrays.update(check_images=images, check_features=feats, check_probs=probs)
    np.savez(out_path, **arrays)


def build(weights_path: str, device="cpu"):
    """The classifier as a function: uint8 (N, 28, 28) -> (features (N, 128), probs (N, 10)), numpy."""
    import torch
    import torch.nn.functional as F

    w = {k: torch.tensor(v, device=device) for k, v in np.load(weights_path).items() if not k.startswith("check_")}

    def block(x, name):
        for i in (1, 2):
            x = F.conv2d(x, w[f"{name}.conv{i}.weight"], padding=1)
            x = F.batch_norm(x, w[f"{name}.norm{i}.moving_mean"], w[f"{name}.norm{i}.moving_variance"],
                             w[f"{name}.norm{i}.gamma"], w[f"{name}.norm{i}.beta"], training=False, eps=BN_EPS)
            x = F.relu(x)
        return F.max_pool2d(x, 2, 2)

    @torch.no_grad()
    def forward(images: np.ndarray, batch: int = 2000):
        feats, probs = [], []
        for s in range(0, len(images), batch):
            x = torch.tensor(images[s:s + batch], device=device).float()[:, None] / 127.5 - 1.0
            x = block(block(x, "block1"), "block2").flatten(1)
            f = F.relu(F.linear(x, w["hidden.weight"], w["hidden.bias"]))
            feats.append(f.cpu().numpy())
            probs.append(torch.softmax(F.linear(f, w["head.weight"], w["head.bias"]), -1).cpu().numpy())
        return np.concatenate(feats), np.concatenate(probs)

    return forward


def check(weights_path: str) -> int:
    ref = np.load(weights_path)
    feats, probs = build(weights_path)(ref["check_images"])
    df = np.abs(feats - ref["check_features"]).max()
    dp = np.abs(probs - ref["check_probs"]).max()
    print(f"max |features - MindSpore's| = {df:.2e} (feature scale {np.abs(ref['check_features']).max():.1f}); "
          f"max |probs - MindSpore's| = {dp:.2e}")
    return 0 if df < 1e-3 * max(1.0, np.abs(ref["check_features"]).max()) and dp < 1e-4 else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "export":
        export(sys.argv[2], features_of=sys.argv[3] if len(sys.argv) > 3 else None)
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    else:
        sys.exit(__doc__)
