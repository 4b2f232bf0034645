"""The Fréchet distance against direct computations: eigen-decomposition of the product,
closed forms for Gaussians, and the properties a distance must have."""
import numpy as np
import pytest

from ddpm_ms.metrics import feature_statistics, frechet_distance, trace_sqrt_product


def random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (1e-3 * np.eye(d) if rank is None else 0.0)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_trace_sqrt_matches_eigenvalues_of_the_product(rng, d):
    for _ in range(5):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        # S1 S2 is similar to an SPD matrix: its eigenvalues are real and positive.
        direct = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
        assert trace_sqrt_product(s1, s2) == pytest.approx(direct, rel=1e-9)


def test_rank_deficient_covariances_stay_finite(rng):
    s1, s2 = random_spd(rng, 64, rank=10), random_spd(rng, 64, rank=20)  # fewer samples than features
    value = trace_sqrt_product(s1, s2)
    assert np.isfinite(value) and value >= 0
    direct = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    assert value == pytest.approx(direct, rel=1e-6, abs=1e-6)


def test_closed_forms():
    d = 8
    mu = np.arange(d, dtype=float)
    # Identical Gaussians: 0. Shifted means, same covariance: |dmu|^2.
    assert frechet_distance(mu, np.eye(d), mu, np.eye(d)) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(mu, np.eye(d), mu + 0.5, np.eye(d)) == pytest.approx(d * 0.25)
    # Isotropic covariances a^2 I and b^2 I: d (a - b)^2.
    assert frechet_distance(mu, 4.0 * np.eye(d), mu, 9.0 * np.eye(d)) == pytest.approx(d * (2.0 - 3.0) ** 2)


def test_distance_is_symmetric_and_grows_with_the_difference(rng):
    x = rng.standard_normal((2000, 6))
    stats = feature_statistics(x)
    near = feature_statistics(x[:1000] + 0.1)
    far = feature_statistics(x[:1000] * 2.0 + 1.0)
    d_near, d_far = frechet_distance(*stats, *near), frechet_distance(*stats, *far)
    assert 0 < d_near < d_far
    assert frechet_distance(*near, *stats) == pytest.approx(d_near, rel=1e-9)


def test_statistics_are_float64_unbiased_and_refuse_bad_input(rng):
    # Known answers. A float32 feature at 2^24 and 2^24 + 2: its mean 2^24 + 1 has no float32 value and
    # its unbiased variance is ((-1)^2 + 1^2) / (2 - 1) = 2 (the biased one would be 1).
    mu, sigma = feature_statistics(np.array([[2.0 ** 24, 0.0], [2.0 ** 24 + 2, 0.0]], np.float32))
    assert mu.dtype == sigma.dtype == np.float64
    assert mu.tolist() == [2.0 ** 24 + 1, 0.0] and sigma.tolist() == [[2.0, 0.0], [0.0, 0.0]]
    # Points (1, 2), (-1, -2), (3, 6), (-3, -6): mean 0, sums of products 20, 40 and 80 over N - 1 = 3.
    mu, sigma = feature_statistics(np.array([[1, 2], [-1, -2], [3, 6], [-3, -6]], np.float32))
    np.testing.assert_allclose(mu, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(sigma, np.array([[20.0, 40.0], [40.0, 80.0]]) / 3, rtol=1e-15)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(x[:1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        feature_statistics(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])
