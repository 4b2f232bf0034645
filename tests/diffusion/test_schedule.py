"""Schedule constants against NumPy computed by hand, and the terminal noise level of presets."""
import math

import numpy as np
import pytest

from ddpm_ms.presets import PRESETS, preset
from ddpm_ms.diffusion import NoiseSchedule


def test_linear_constants_by_hand():
    s = NoiseSchedule(10, "linear", beta_start=0.1, beta_end=0.5)
    betas = np.array([0.1 + 0.4 * i / 9 for i in range(10)])
    ab = np.ones(10)
    running = 1.0
    for i, b in enumerate(betas):
        running *= 1 - b
        ab[i] = running
    np.testing.assert_allclose(s.betas, betas, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod, ab, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod_prev, np.r_[1.0, ab[:-1]], rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - ab), rtol=1e-12)
    post = betas * (1 - np.r_[1.0, ab[:-1]]) / (1 - ab)
    np.testing.assert_allclose(s.posterior_variance, post, rtol=1e-12)
    assert s.posterior_variance[0] == 0.0
    assert s.tensor("alphas_cumprod").dtype.__str__().lower().startswith("float32")
    np.testing.assert_allclose(s.tensor("alphas_cumprod").asnumpy(), ab.astype(np.float32))


def test_linear_defaults_scale_with_T():
    s = NoiseSchedule(200, "linear")
    assert s.betas[0] == pytest.approx(1e-4 * 5) and s.betas[-1] == pytest.approx(0.02 * 5)


def test_cosine_by_hand():
    T, sft = 50, 0.008
    f = [math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(T)]
    np.testing.assert_allclose(NoiseSchedule(T, "cosine").betas, betas, rtol=1e-12)


def test_quadratic_and_sigmoid_by_hand():
    q = NoiseSchedule(5, "quadratic", beta_start=0.01, beta_end=0.09)
    np.testing.assert_allclose(q.betas, np.linspace(0.1, 0.3, 5) ** 2, rtol=1e-12)
    sg = NoiseSchedule(5, "sigmoid", beta_start=0.01, beta_end=0.09)
    ref = [0.01 + 0.08 / (1 + math.exp(-x)) for x in (-6, -3, 0, 3, 6)]
    np.testing.assert_allclose(sg.betas, ref, rtol=1e-12)


def test_p2_weights():
    s = NoiseSchedule(100, "linear")
    snr = s.alphas_cumprod / (1 - s.alphas_cumprod)
    np.testing.assert_allclose(s.p2_weights(0.5, 1.0), (1 + snr) ** -0.5, rtol=1e-12)
    np.testing.assert_array_equal(s.p2_weights(0.0), np.ones(100))
    w = s.p2_weights(1.0, 1.0)
    assert np.all(np.diff(w) > 0)  # more weight on noisier steps


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_ends_at_pure_noise(name):
    cfg = preset(name).diffusion
    assert NoiseSchedule.from_config(cfg).terminal_alpha_bar < 1e-3
    if name.startswith("cifar10"):  # reproductions of Ho et al. and its conditional port: their plain MSE
        assert (cfg.p2_gamma, cfg.loss_type) == (0.0, "l2")
    else:  # our own recipes really weight (gamma = 0 would be a no-op)
        assert cfg.p2_gamma > 0


def test_the_tutorial_schedule_would_fail_that_check():
    # T = 200, betas 1e-4 .. 0.02 unscaled: 36% of the amplitude is still there at t = T.
    s = NoiseSchedule(200, "linear", beta_start=1e-4, beta_end=0.02)
    assert math.sqrt(s.terminal_alpha_bar) == pytest.approx(0.36, abs=0.01)


def test_bad_schedules_are_errors():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        NoiseSchedule(10, "exponential")
    with pytest.raises(ValueError, match="betas must lie"):
        NoiseSchedule(10, "linear", beta_start=0.5, beta_end=1.5)
    with pytest.raises(ValueError, match="cosine"):
        NoiseSchedule(20, "linear")  # the default betas scaled to T = 20 would end at 1.0
