"""Score images against a real data set in the feature space of the committed classifier:
FID, classifier Inception Score, class histogram and k-NN precision / recall.

    extractor = FeatureExtractor("fashion_mnist")
    reference = Reference.load("fashion_mnist", extractor)        # test set, cached on disk
    scores = score_images(images, extractor, reference)           # images in [-1, 1] or uint8

Samples are quantised to uint8 before scoring, as the real images are and as an .npz written
by sample.py is, so scoring a model directly or through its .npz gives the same figures.
The real test set's features are cached under $DDPM_MS_CACHE (default ~/.cache/ddpm_ms),
keyed by the classifier's weights and the data file, so a retrained classifier or another
copy of the data never reuses stale statistics.
"""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddpm_ms.metrics.fid import feature_statistics, frechet_distance
from ddpm_ms.metrics.scores import class_histogram, inception_score, knn_radii, precision_recall

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SUPPORTED_DATA = ("fashion_mnist", "mnist")
IMAGE_SHAPE = (1, 28, 28)
PR_K = 3


class MetricsUnavailable(ValueError):
    """No feature extractor for this kind of data, or its weights are missing."""


def classifier_weights(data: str) -> Path:
    """The committed classifier checkpoint for `data` (an error naming the fix when absent)."""
    if data not in SUPPORTED_DATA:
        raise MetricsUnavailable(
            f"FID here is measured with a classifier trained on 28x28 grayscale {' or '.join(SUPPORTED_DATA)}; "
            f"there is none for {data!r}. Score such samples with a general-purpose tool from the .npz that "
            "`sample.py --npz` writes")
    path = WEIGHTS_DIR / f"{data}_classifier.ckpt"
    if not path.is_file():
        raise MetricsUnavailable(f"classifier weights {path} are missing; make them with "
                                 f"`python scripts/train_classifier.py --data {data}`")
    return path


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def cache_dir() -> Path:
    root = os.environ.get("DDPM_MS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddpm_ms"
    return Path(root) / "metrics"


def to_uint8_gray(images) -> np.ndarray:
    """Images as (N, 28, 28) uint8. Accepts float (N, 1, 28, 28) in [-1, 1] (what samplers return)
    and uint8 (N, 28, 28), (N, 28, 28, 1) or (N, 1, 28, 28) (IDX files, sample.py --npz)."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"float images must be (N, 1, 28, 28) in [-1, 1], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the images contain NaN or Inf: the model that drew them is broken")
        if x.min() >= 0.0 and x.max() > 0.0:
            raise ValueError("float images are expected in [-1, 1] (what the samplers return), but these have no "
                             "negative values: images in [0, 1] would be scored wrong. Pass x * 2 - 1, or uint8")
        from ddpm_ms.viz import to_uint8
        return to_uint8(x)[:, 0]
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE[1:]:
        raise ValueError(f"uint8 images must be 28x28 grayscale (N, 28, 28[, 1]), got shape {np.asarray(images).shape}"
                         "; FID here is defined for Fashion-MNIST / MNIST-shaped samples")
    return x


class FeatureExtractor:
    """The committed classifier for `data`: images -> (penultimate features, class probabilities)."""

    def __init__(self, data: str, batch_size: int = 500, jit: bool = True):
        import mindspore as ms
        from mindspore import ops

        from ddpm_ms.metrics.classifier import FeatureClassifier

        path = classifier_weights(data)
        self.data, self.batch_size, self.fingerprint = data, batch_size, _file_digest(path)
        self.model = FeatureClassifier()
        missing, _ = ms.load_param_into_net(self.model, ms.load_checkpoint(str(path)), strict_load=True)
        if missing:
            raise MetricsUnavailable(f"{path} does not fit the classifier (missing {', '.join(missing[:5])}); "
                                     f"retrain it with `python scripts/train_classifier.py --data {data}`")
        self.model.set_train(False)

        def forward(x):
            features = self.model.features(x)
            return features, ops.softmax(self.model.head(features), axis=-1)

        self._forward = ms.jit(forward) if jit else forward

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, 128), probabilities (N, 10)), both float32."""
        import mindspore as ms

        x = to_uint8_gray(images).astype(np.float32)[:, None] / 127.5 - 1.0
        features, probs = [], []
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:  # pad: one compiled shape for every batch
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, *IMAGE_SHAPE), np.float32)])
            f, p = self._forward(ms.Tensor(batch))
            features.append(f.asnumpy()[:n])
            probs.append(p.asnumpy()[:n])
        return np.concatenate(features), np.concatenate(probs)


@dataclass
class Reference:
    """Features of a real split and what scoring needs from them, computed once."""
    data: str
    split: str
    features: np.ndarray
    mu: np.ndarray = field(init=False)
    sigma: np.ndarray = field(init=False)
    _subsets: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.mu, self.sigma = feature_statistics(self.features)
        self._subsets = {}

    def manifold(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, k-NN radii) of a fixed random subset of n real images (all of them when n is
        at least their number). Precision and recall compare sets of equal size, as
        Kynkäänniemi et al. do: a sample set smaller than the real one would get wider k-NN
        balls than the real images and an inflated recall."""
        n = min(int(n), len(self.features))
        if n not in self._subsets:
            keep = np.sort(np.random.default_rng(0).permutation(len(self.features))[:n])
            subset = self.features[keep]
            self._subsets[n] = (subset, knn_radii(subset, PR_K))
        return self._subsets[n]

    @property
    def name(self) -> str:
        return f"{self.data} {self.split} ({len(self.features)} images)"

    @classmethod
    def load(cls, data: str, extractor: FeatureExtractor, root=None, split: str = "test") -> "Reference":
        """The real `split` of `data` (from `root`, default the embedded copy), its features cached."""
        from ddpm_ms.data.datasets import DEFAULT_ROOTS, IDX_FILES, load_idx_dataset
        from ddpm_ms.files import atomic_write

        image_file = Path(root if root is not None else DEFAULT_ROOTS[data]) / IDX_FILES[split][0]
        key = f"{data}-{split}-clf{extractor.fingerprint}-data{_file_digest(image_file)}" if image_file.is_file() else None
        cached = cache_dir() / f"{key}.npz" if key else None
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as f:
                    return cls(data, split, f["features"])
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error):
                pass  # a damaged cache is recomputed below
        images, _ = load_idx_dataset(data, root, split)
        features, _ = extractor(images)
        if cached is not None:
            def write(tmp):
                with open(tmp, "wb") as out:
                    np.savez(out, features=features)
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, write, durable=False)
        return cls(data, split, features)


def score_features(features, probs, reference: Reference) -> dict:
    """FID (against all the real images), Inception Score (one split over all samples), precision,
    recall (against as many real images as samples) and class histogram of sample features."""
    mu, sigma = feature_statistics(features)
    if len(features) <= PR_K:
        raise ValueError(f"scoring needs more than {PR_K} images (precision and recall use {PR_K} nearest "
                         f"neighbours), got {len(features)}")
    real, radii = reference.manifold(len(features))
    precision, recall = precision_recall(real, features, PR_K, radii)
    return {"fid": round(frechet_distance(mu, sigma, reference.mu, reference.sigma), 4),
            "inception_score": round(inception_score(probs), 4),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "class_histogram": [round(float(v), 4) for v in class_histogram(probs)],
            "num": int(len(features)), "reference": reference.name}


def score_images(images, extractor: FeatureExtractor, reference: Reference) -> dict:
    """score_features of images in [-1, 1] (N, 1, 28, 28) or uint8."""
    features, probs = extractor(images)
    return score_features(features, probs, reference)


def sample_and_score(model, cfg, extractor: FeatureExtractor, reference: Reference, sampler: str = "dpm++",
                     steps: int | None = None, num: int = 10_000, seed: int = 0, batch_size: int = 250,
                     jit: bool = True, progress: bool = True, timestep_spacing: str | None = None,
                     guidance_scale: float | None = None, guidance_rescale: float | None = None,
                     guidance_interval=None, lambda_min_clipped: float | None = None) -> tuple[dict, np.ndarray]:
    """Draw `num` images from `model` with `sampler` and score them. Returns (record, images):
    the record holds the scores, the sampler, the steps it took and the sampling seconds.
    A class-conditional model draws every class equally often (as the test set holds them), with
    classifier-free guidance `guidance_scale`, `guidance_rescale` and `guidance_interval` (None: the
    run's cfg.train.guidance_scale / guidance_rescale / guidance_interval; an empty interval, as
    `--guidance-interval all` parses: every step)."""
    from ddpm_ms.sampling import balanced_labels, sample_many, scheduler_for

    scheduler = scheduler_for(sampler, cfg, timestep_spacing=timestep_spacing, lambda_min_clipped=lambda_min_clipped)
    steps = steps or scheduler.num_inference_steps
    conditional = bool(cfg.model.num_classes)
    w = float(cfg.train.guidance_scale if guidance_scale is None else guidance_scale)
    phi = float(cfg.train.guidance_rescale if guidance_rescale is None else guidance_rescale)
    interval = cfg.train.guidance_interval if guidance_interval is None else tuple(guidance_interval) or None
    tic = time.perf_counter()
    images, _ = sample_many(model, scheduler, num, (cfg.model.channels, *cfg.model.image_size), batch_size=batch_size,
                            num_inference_steps=steps, seed=seed, jit=jit, progress=progress,
                            class_labels=balanced_labels(num, cfg.model.num_classes) if conditional else None,
                            guidance_scale=w, guidance_rescale=phi, guidance_interval=interval)
    seconds = time.perf_counter() - tic
    record = score_images(images, extractor, reference)
    record.update(sampler=sampler, steps=int(steps), spacing=scheduler.timestep_spacing)
    clipped = getattr(scheduler, "lambda_min_clipped", -np.inf)  # DPM-Solver++ only
    if np.isfinite(clipped):
        record["lambda_min_clipped"] = clipped
    record.update(first_timestep=int(scheduler.timesteps[0]), seed=int(seed), seconds=round(seconds, 1))
    if conditional:
        record.update(guidance_scale=w, **({"guidance_rescale": phi} if phi else {}),
                      **({"guidance_interval": list(interval)} if interval and w != 1 else {}))
    return record, images
