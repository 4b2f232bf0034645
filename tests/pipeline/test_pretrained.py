"""The pipeline shipped with the package: it loads by name with nothing else on disk, states its FID
and floor, and draws the classes it is asked for, as the evaluation classifier sees them."""
import re

import numpy as np

from ddpm_ms.metrics.evaluation import FeatureExtractor
from ddpm_ms.pipeline import DEFAULT_PRETRAINED, DiffusionPipeline, shipped_pipelines
from ddpm_ms.pipeline.diffusion_pipeline import PRETRAINED_DIR


def test_the_default_is_shipped_small_and_self_describing():
    assert DEFAULT_PRETRAINED in shipped_pipelines()
    folder = PRETRAINED_DIR / DEFAULT_PRETRAINED
    assert sum(f.stat().st_size for f in folder.iterdir()) < 4e6, "a few MB: it lives in the repository"
    card = (folder / "README.md").read_text()
    fid = re.search(r"\| FID \| ([\d.]+) at 10,000 images .* floor of ([\d.]+)", card)
    assert fid and 0 < float(fid.group(2)) < float(fid.group(1)), "the card states an FID at 10,000 images and its floor"
    assert "python scripts/train.py" in card, "and the command that trained it"


def test_the_shipped_model_draws_the_classes_asked_for():
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_PRETRAINED)
    assert pipe.dataset == "fashion_mnist" and pipe.num_classes == 10
    out = pipe(num_images=30, seed=0, batch_size=30, progress=False)  # every class 3 times; its own sampler
    assert out.labels.tolist() == list(range(10)) * 3
    _, probs = FeatureExtractor("fashion_mnist")(out.images)
    accuracy = float(np.mean(probs.argmax(axis=1) == out.labels))
    # The classifier is right on 93% of real test images; the preset's samples score 93% at 10,000.
    assert accuracy >= 0.8, f"only {accuracy:.0%} of the samples are recognised as the class asked for"
