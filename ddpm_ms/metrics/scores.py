"""Scores beside FID, in the same feature space: a classifier-based Inception Score, the class
histogram of samples, and improved precision and recall (Kynkäänniemi et al. 2019)."""
from __future__ import annotations

import numpy as np


def inception_score(probs, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))) for (N, C) class probabilities: C for confident predictions
    spread evenly over C classes, 1 when every sample gets the same prediction."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"probs must be (N, C) rows summing to 1, got shape {p.shape}")
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def class_histogram(probs, num_classes: int | None = None) -> np.ndarray:
    """The share of samples the classifier puts in each class (argmax)."""
    p = np.asarray(probs)
    counts = np.bincount(p.argmax(axis=1), minlength=num_classes or p.shape[1])
    return counts / counts.sum()


def _distance_blocks(a: np.ndarray, b: np.ndarray, batch: int = 1024):
    """Yield (row offset, Euclidean distances of a[rows] to every row of b), one block at a
    time, so 10,000 x 10,000 comparisons never hold the whole matrix."""
    b_sq = (b * b).sum(axis=1)
    for i in range(0, len(a), batch):
        x = a[i:i + batch]
        d2 = (x * x).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * x @ b.T
        yield i, np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(features, k: int = 3) -> np.ndarray:
    """Distance from each feature vector to its k-th nearest neighbour in the same set."""
    x = np.asarray(features, np.float64)
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} samples for k-NN radii, got {len(x)}")
    radii = np.empty(len(x))
    for i, d in _distance_blocks(x, x):
        radii[i:i + len(d)] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself (distance 0)
    return radii


def _share_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of `points` inside at least one ball (centre, radius)."""
    inside = np.zeros(len(points), dtype=bool)
    for i, d in _distance_blocks(points, centres):
        inside[i:i + len(d)] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real, fake, k: int = 3, real_radii=None) -> tuple[float, float]:
    """Improved precision (share of samples inside the real manifold: the union of k-NN balls
    around real features) and recall (share of real features inside the samples' manifold).
    `real_radii` (knn_radii(real, k)) can be passed in when the real set is scored repeatedly."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must be (N, D) of the same D, got {real.shape}, {fake.shape}")
    real_radii = knn_radii(real, k) if real_radii is None else np.asarray(real_radii, np.float64)
    if real_radii.shape != (len(real),):
        raise ValueError(f"real_radii must hold one radius per real feature ({len(real)}), got {real_radii.shape}")
    return _share_inside(fake, real, real_radii), _share_inside(real, fake, knn_radii(fake, k))
