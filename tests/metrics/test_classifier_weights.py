"""Where the FID classifier's weights come from: an explicit path, then $DDPM_MS_CLASSIFIER_DIR, then the
committed ones in the package."""
import hashlib
import shutil

import pytest

from ddpm_ms.metrics.evaluation import (CLASSIFIER_ENV, WEIGHTS_DIR, FeatureExtractor, MetricsUnavailable,
                                        classifier_weights)

COMMITTED = {data: WEIGHTS_DIR / f"{data}_classifier.ckpt" for data in ("fashion_mnist", "mnist")}


@pytest.fixture
def user_dir(monkeypatch, tmp_path):
    """$DDPM_MS_CLASSIFIER_DIR holding an MNIST classifier only (a copy of the committed one)."""
    folder = tmp_path / "classifiers"
    folder.mkdir()
    shutil.copy(COMMITTED["mnist"], folder / "mnist_classifier.ckpt")
    monkeypatch.setenv(CLASSIFIER_ENV, str(folder))
    return folder


def test_committed_weights_without_the_variable(monkeypatch):
    monkeypatch.delenv(CLASSIFIER_ENV, raising=False)
    assert classifier_weights("fashion_mnist") == COMMITTED["fashion_mnist"]


def test_the_variables_folder_comes_before_the_committed_weights(user_dir):
    assert classifier_weights("mnist") == user_dir / "mnist_classifier.ckpt"
    assert classifier_weights("fashion_mnist") == COMMITTED["fashion_mnist"]  # not in the folder: the committed one


def test_an_explicit_path_comes_first(user_dir, tmp_path):
    mine = tmp_path / "mine.ckpt"
    shutil.copy(COMMITTED["mnist"], mine)
    assert classifier_weights("mnist", mine) == mine
    assert classifier_weights("mnist", user_dir) == user_dir / "mnist_classifier.ckpt"  # a folder
    with pytest.raises(MetricsUnavailable) as e:  # an explicit path that is missing is an error, not a fallback
        classifier_weights("fashion_mnist", tmp_path / "nowhere.ckpt")
    assert "nowhere.ckpt" in str(e.value) and "train_classifier.py --data fashion_mnist" in str(e.value)


def test_feature_extractor_loads_the_weights_it_is_given(user_dir, tmp_path):
    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    # the MNIST classifier's weights fit the same network, so the fingerprint tells which file was loaded
    extractor = FeatureExtractor("fashion_mnist", jit=False, weights=user_dir / "mnist_classifier.ckpt")
    assert extractor.fingerprint == digest(COMMITTED["mnist"]) != digest(COMMITTED["fashion_mnist"])
