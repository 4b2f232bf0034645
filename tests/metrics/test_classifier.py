"""The FID feature extractor: shapes and the feature layer it exposes."""
import mindspore as ms
import numpy as np

from ddpm_ms.metrics.classifier import FEATURE_DIM, NUM_CLASSES, FeatureClassifier


def test_logits_come_from_the_features():
    ms.set_seed(0)
    model = FeatureClassifier()
    model.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (5, 1, 28, 28)).astype(np.float32))
    feats = model.features(x).asnumpy()
    assert feats.shape == (5, FEATURE_DIM) and (feats >= 0).all(), "features are post-ReLU activations"
    logits = model(x).asnumpy()
    assert logits.shape == (5, NUM_CLASSES)
    expected = feats @ model.head.weight.asnumpy().T + model.head.bias.asnumpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
