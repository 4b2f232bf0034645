"""Inception Score, class histogram and k-NN precision/recall on cases with known answers."""
import numpy as np
import pytest

from ddpm_ms.metrics.scores import class_histogram, inception_score, knn_radii, precision_recall


def test_inception_score_extremes():
    confident = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.tile(np.eye(10)[3], (500, 1))) == pytest.approx(1.0)
    assert inception_score(np.full((100, 10), 0.1)) == pytest.approx(1.0)
    half = np.eye(10)[np.arange(1000) % 5]  # confident, but only 5 classes used
    assert inception_score(half) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="summing to 1"):
        inception_score(np.ones((4, 3)))


def test_class_histogram():
    probs = np.eye(4)[[0, 0, 1, 3]] * 0.7 + 0.075
    np.testing.assert_allclose(class_histogram(probs), [0.5, 0.25, 0.0, 0.25])


def test_knn_radii_of_points_on_a_line():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    np.testing.assert_allclose(knn_radii(x, k=1), [1.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="more than k"):
        knn_radii(x, k=4)


def test_precision_and_recall(rng):
    real = rng.standard_normal((600, 8))
    same = rng.standard_normal((600, 8))
    p, r = precision_recall(real, same)
    assert p > 0.6 and r > 0.6
    far = rng.standard_normal((600, 8)) + 20.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # Mode collapse: samples near 5 real points are precise but cover almost none of the rest.
    collapsed = np.repeat(real[:5], 60, axis=0) + 0.01 * rng.standard_normal((300, 8))
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.05
    with pytest.raises(ValueError, match="same D"):
        precision_recall(real, real[:, :4])
