"""Score images against a real data set in the feature space of the committed classifier:
FID, classifier Inception Score, class histogram and k-NN precision / recall; for images drawn
for given classes also the share the classifier assigns to their class and the FID of each class
against that class's real images.

    extractor = FeatureExtractor(data)                            # data: a data set with a classifier
    reference = Reference.load(data, extractor)                   # its test set, cached on disk
    scores = score_images(images, extractor, reference)           # images in [-1, 1] or uint8
    scores = score_images(images, extractor, reference, labels)   # + class_accuracy, class_fid
    fid_floor(extractor, reference, len(images))                  # the same count of real train images
    class_fid_floor(extractor, reference, np.bincount(labels))    # the same, per class

Samples are quantised to uint8 before scoring, as the real images are and as an .npz written
by sample.py is, so scoring a model directly or through its .npz gives the same figures.
The real test set's features are cached under $DDPM_MS_CACHE (default ~/.cache/ddpm_ms),
keyed by the classifier's weights and the data files (images and labels), so a retrained
classifier or another copy of the data never reuses stale statistics.
"""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import ops

from ddpm_ms.data.errors import DataError
from ddpm_ms.files import atomic_write
from ddpm_ms.metrics.classifier import NUM_CLASSES, FeatureClassifier
from ddpm_ms.metrics.fid import feature_statistics, frechet_distance
from ddpm_ms.metrics.scores import class_histogram, inception_score, knn_radii, precision_recall
from ddpm_ms.registry import DATASETS
from ddpm_ms.viz import to_uint8

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # the committed classifiers (read only)
CLASSIFIER_ENV = "DDPM_MS_CLASSIFIER_DIR"  # a folder of <data>_classifier.ckpt looked in before WEIGHTS_DIR
PR_K = 3


def scored_datasets() -> tuple:
    """The registered data sets that FID is measured on here: those with a classifier and a test split."""
    return tuple(n for n in DATASETS if DATASETS[n].classifier and DATASETS[n].load_split and DATASETS[n].image_shape)


def data_shape(data: str) -> tuple:
    """(C, H, W) of the images of data set `data`."""
    return tuple(DATASETS[data].image_shape)


class MetricsUnavailable(ValueError):
    """No feature extractor for this kind of data, or its weights are missing."""


def classifier_weights(data: str, weights=None) -> Path:
    """The classifier checkpoint for `data`: `weights` (a .ckpt, or a folder holding <data>_classifier.ckpt)
    when given, else the first of $DDPM_MS_CLASSIFIER_DIR/<data>_classifier.ckpt and the committed one
    in the package; an error naming where it looked and the fix when there is none."""
    if data not in scored_datasets():
        raise MetricsUnavailable(
            f"FID here is measured with a classifier trained on {', '.join(scored_datasets())}; there is none for "
            f"{data!r}. Score such samples with a general-purpose tool from the .npz that `sample.py --npz` writes")
    name = DATASETS[data].classifier
    if weights is not None:
        candidates = [Path(weights) / name if Path(weights).is_dir() else Path(weights)]
    else:
        env = os.environ.get(CLASSIFIER_ENV)
        candidates = ([Path(env).expanduser() / name] if env else []) + [WEIGHTS_DIR / name]
    for path in candidates:
        if path.is_file():
            return path
    raise MetricsUnavailable(f"no classifier weights for {data} (looked for {', '.join(map(str, candidates))}); make "
                             f"them with `python scripts/train_classifier.py --data {data}` and set {CLASSIFIER_ENV} "
                             "to the folder it writes to")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def cache_dir() -> Path:
    root = os.environ.get("DDPM_MS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddpm_ms"
    return Path(root) / "metrics"


def crop_margin(image_shape, data: str) -> int:
    """The border to cut from every side of `image_shape` (C, H, W) samples to get `data`'s images: 0
    when they match, 2 for Fashion-MNIST padded to 32x32 (data.pad); a ValueError naming both otherwise."""
    want = data_shape(data)
    c, h, w = (int(v) for v in image_shape)
    margin = (h - want[1]) // 2
    if c == want[0] and h == w and margin >= 0 and h == want[1] + 2 * margin:
        return margin
    raise ValueError(f"the model makes {c}-channel {h}x{w} images but {data}'s classifier scores {want[0]}-channel "
                     f"{want[1]}x{want[2]} ones; score against the data set the model was trained on")


def centre_crop(images, margin: int):
    """Images (N, C, H, W) without `margin` pixels on every side (undoes data.pad)."""
    return images if not margin else images[:, :, margin:-margin, margin:-margin]


def to_uint8_images(images, shape) -> np.ndarray:
    """Images as (N, C, H, W) uint8 of `shape` (C, H, W). Accepts float (N, C, H, W) in [-1, 1] (what
    samplers return) and uint8 (N, C, H, W) or (N, H, W, C) (and (N, H, W) when C is 1: IDX files,
    sample.py --npz)."""
    c, h, w = shape
    x = np.asarray(images)
    if x.dtype != np.uint8:
        if x.ndim != 4 or x.shape[1:] != tuple(shape):
            raise ValueError(f"float images must be (N, {c}, {h}, {w}) in [-1, 1], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the images contain NaN or Inf: the model that drew them is broken")
        if x.min() >= 0.0 and x.max() > 0.0:
            raise ValueError("float images are expected in [-1, 1] (what the samplers return), but these have no "
                             "negative values: images in [0, 1] would be scored wrong. Pass x * 2 - 1, or uint8")
        return to_uint8(x)
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1:] != tuple(shape) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1:] != tuple(shape):
        raise ValueError(f"uint8 images must be {h}x{w} with {c} channel(s), (N, {c}, {h}, {w}) or (N, {h}, {w}, {c}), "
                         f"got shape {np.asarray(images).shape}")
    return x


class FeatureExtractor:
    """The classifier for `data` (its weights found by classifier_weights: `weights`, $DDPM_MS_CLASSIFIER_DIR,
    then the committed ones): images -> (penultimate features, class probabilities)."""

    def __init__(self, data: str, batch_size: int = 500, jit: bool = True, weights=None):
        path = classifier_weights(data, weights)
        self.data, self.batch_size, self.fingerprint = data, batch_size, _file_digest(path)
        self.shape = data_shape(data)
        self.model = FeatureClassifier(in_channels=self.shape[0], image_size=self.shape[1])
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
        x = to_uint8_images(images, self.shape).astype(np.float32) / 127.5 - 1.0
        features, probs = [], []
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:  # pad: one compiled shape for every batch
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, *self.shape), np.float32)])
            f, p = self._forward(ms.Tensor(batch))
            features.append(f.asnumpy()[:n])
            probs.append(p.asnumpy()[:n])
        return np.concatenate(features), np.concatenate(probs)


@dataclass
class Reference:
    """Features (and labels) of a real split and what scoring needs from them, computed once."""
    data: str
    split: str
    features: np.ndarray
    labels: np.ndarray | None = None
    mu: np.ndarray = field(init=False)
    sigma: np.ndarray = field(init=False)
    _subsets: dict = field(init=False, repr=False)
    _classes: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.mu, self.sigma = feature_statistics(self.features)
        self._subsets, self._classes = {}, {}
        if self.labels is not None and len(self.labels) != len(self.features):
            raise ValueError(f"{len(self.labels)} labels for {len(self.features)} real images")

    def class_statistics(self, label: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, covariance) of the real images of one class; None without labels or with fewer than 2."""
        if self.labels is None:
            return None
        if label not in self._classes:
            members = self.features[self.labels == label]
            self._classes[label] = feature_statistics(members) if len(members) > 1 else None
        return self._classes[label]

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

    @staticmethod
    def cache_file(data: str, extractor: FeatureExtractor, root=None, split: str = "test") -> Path | None:
        """Where load caches the features: keyed by the classifier and by the split's files (None when a
        file is missing, and load's own error names it, or when the data set's files are not known)."""
        entry = DATASETS[data]
        try:
            files = entry.split_files(root, split) if entry.split_files else None
        except DataError:
            return None
        if files is None or not all(Path(f).is_file() for f in files):
            return None
        return cache_dir() / f"{data}-{split}-clf{extractor.fingerprint}-data{'-'.join(map(_file_digest, files))}.npz"

    @classmethod
    def load(cls, data: str, extractor: FeatureExtractor, root=None, split: str = "test") -> "Reference":
        """The real `split` of `data` (from `root`, default its folder under the data root), its features cached."""
        cached = cls.cache_file(data, extractor, root, split)
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as f:
                    return cls(data, split, f["features"], f["labels"])
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error):
                pass  # a damaged cache (or one from before labels were kept) is recomputed below
        images, labels = DATASETS[data].load_split(root, split)
        features, _ = extractor(images)
        labels = np.asarray(labels, np.int64)
        if cached is not None:
            def write(tmp):
                with open(tmp, "wb") as out:
                    np.savez(out, features=features, labels=labels)
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, write, durable=False)
        return cls(data, split, features, labels)


def score_features(features, probs, reference: Reference, labels=None) -> dict:
    """FID (against all the real images), Inception Score (one split over all samples), precision,
    recall (against as many real images as samples) and class histogram of sample features.

    With `labels`, the class each sample was drawn for, also class_accuracy (the share that the
    classifier assigns to that class), class_accuracy_by_class (that share in each class; None for a
    class without samples) and class_fid (per class, the FID of its samples against the
    real images of that class; None for a class with fewer than 2 samples or real images: where a
    class-conditional model's FID comes from; the key is absent when the reference has no labels).
    Per-class FIDs rest on fewer images, so they sit higher than the overall one and compare only
    at equal counts."""
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
            "num": int(len(features)), "reference": reference.name,
            **({} if labels is None else class_scores(features, probs, reference, labels))}


def class_scores(features, probs, reference: Reference, labels) -> dict:
    """class_accuracy, class_accuracy_by_class and (when the reference has labels) class_fid of samples
    drawn for `labels`."""
    labels = np.asarray(labels)
    if labels.shape != (len(features),):
        raise ValueError(f"labels must be one class per image: got shape {labels.shape} for {len(features)} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer classes, got {labels.dtype}")
    num_classes = probs.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    hits = np.argmax(probs, axis=1) == labels
    scores = {"class_accuracy": round(float(np.mean(hits)), 4),
              "class_accuracy_by_class": [round(float(np.mean(hits[labels == c])), 4) if np.any(labels == c) else None
                                          for c in range(num_classes)]}
    if reference.labels is not None:
        fids = []
        for c in range(num_classes):
            real, members = reference.class_statistics(c), features[labels == c]
            fids.append(None if real is None or len(members) < 2
                        else round(frechet_distance(*feature_statistics(members), *real), 3))
        scores["class_fid"] = fids
    return scores


def score_images(images, extractor: FeatureExtractor, reference: Reference, labels=None) -> dict:
    """score_features of images in [-1, 1] (N, C, H, W) or uint8 (drawn for classes `labels`)."""
    features, probs = extractor(images)
    return score_features(features, probs, reference, labels)


def sample_and_score(pipe, extractor: FeatureExtractor, reference: Reference, sampler: str | None = None,
                     steps: int | None = None, num: int = 10_000, seed: int = 0, batch_size: int = 250,
                     progress: bool = True, timesteps=None, **sampling) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Draw `num` images from the pipeline `pipe` and score them. Returns (record, images, labels):
    the record holds the scores, how the images were drawn (sampler, steps, grid, guidance) and
    the sampling seconds; labels are the classes the images were drawn for (None for an
    unconditional model). A class-conditional model draws every class equally often (as the test
    set holds them). sampler, steps, timesteps (a custom grid) and `sampling` (guidance_scale,
    guidance_rescale, guidance_interval, timestep_spacing, lambda_min_clipped, solver_order) set the
    pipeline's scheduler and guidance: None takes its defaults. class_labels: one class (or "none") for
    every image instead of every class in turn; guidance: LossGuidance terms that steer the images (see
    ddpm_ms.sampling.loss_guidance), recorded by name and scale. Samples larger than the data's
    images by an even margin (a model trained with data.pad) are centre-cropped to the data's size
    before scoring and returned cropped; the record says "crop": margin."""
    margin = crop_margin(pipe.image_shape, extractor.data)

    class_labels = sampling.pop("class_labels", None)
    terms = list(sampling.pop("guidance", None) or ())

    scheduler = pipe.scheduler(sampler, timestep_spacing=sampling.pop("timestep_spacing", None),
                               lambda_min_clipped=sampling.pop("lambda_min_clipped", None),
                               solver_order=sampling.pop("solver_order", None))
    if timesteps is not None:
        if steps is not None:
            raise ValueError("pass steps or timesteps, not both")
        scheduler.set_timesteps(timesteps=timesteps)
    conditional = bool(pipe.num_classes)
    cfg = pipe.guidance(**sampling)
    w, phi, interval = cfg.scale, cfg.rescale, cfg.interval
    tic = time.perf_counter()
    out = pipe(num, scheduler=scheduler, num_inference_steps=steps, seed=seed, batch_size=batch_size,
               progress=progress, class_labels=class_labels, guidance=[cfg, *terms])
    seconds = time.perf_counter() - tic
    # Per-class scores need the model's classes to be the classifier's (a model may hold more), and a class.
    scored_labels = out.labels if (conditional and pipe.num_classes <= NUM_CLASSES
                                   and not np.any(out.labels == pipe.num_classes)) else None
    images = centre_crop(out.images, margin)
    record = score_images(images, extractor, reference, scored_labels)
    if margin:
        record["crop"] = margin
    record.update(sampler=sampler or pipe.sampling.sampler, steps=int(len(out.timesteps)),
                  spacing="custom" if timesteps is not None else scheduler.timestep_spacing)
    if timesteps is not None:
        record["timesteps"] = [int(t) for t in out.timesteps]
    clipped = getattr(scheduler, "lambda_min_clipped", -np.inf)  # DPM-Solver++ only
    if np.isfinite(clipped):
        record["lambda_min_clipped"] = clipped
    if getattr(scheduler, "solver_order", 2) != 2:  # DPM-Solver++ at another order than its default 2M
        record["solver_order"] = scheduler.solver_order
    record.update(first_timestep=int(out.timesteps[0]), seed=int(seed), seconds=round(seconds, 1))
    if class_labels is not None:
        record["class_label"] = str(class_labels)
    if terms:
        record["loss_guidance"] = [{"term": term.name, "scale": term.scale,
                                    **({"interval": list(term.interval)} if term.interval else {})} for term in terms]
        record["guidance_through_model"] = all(term.through_model for term in terms)
    if conditional:
        record.update(guidance_scale=w, **({"guidance_rescale": phi} if phi else {}),
                      **({"guidance_interval": list(interval)} if interval and w != 1 else {}))
    return record, images, out.labels


def fid_floor(extractor: FeatureExtractor, reference: Reference, num: int, root=None) -> float:
    """The FID of the first `num` real train images against `reference` (the test set): the best a
    model's `num` samples can score in this feature space (their features cached like the reference's)."""
    train = Reference.load(reference.data, extractor, root, split="train")
    return round(frechet_distance(*feature_statistics(train.features[:num]), reference.mu, reference.sigma), 4)


def class_fid_floor(extractor: FeatureExtractor, reference: Reference, counts, root=None) -> list:
    """Per class c, the floor of its class_fid at counts[c] samples: the FID of the first counts[c] real
    train images of class c against the real images of class c in `reference` (the test set), as
    class_scores scores samples. None for a class with fewer than 2 images on either side. A
    per-class FID rests on few images and sits well above the overall one: compare it with this."""
    train = Reference.load(reference.data, extractor, root, split="train")
    floors = []
    for c, n in enumerate(int(n) for n in counts):
        real = reference.class_statistics(c)
        members = train.features[train.labels == c]
        if n > len(members):
            raise ValueError(f"the train split holds {len(members)} images of class {c}, fewer than the {n} "
                             "samples of that class: the per-class floor needs as many real ones")
        floors.append(None if real is None or n < 2
                      else round(frechet_distance(*feature_statistics(members[:n]), *real), 3))
    return floors
