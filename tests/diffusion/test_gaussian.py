"""Forward process statistics and the loss (each type, p2 and Min-SNR weighting) against NumPy."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import UNetConfig


class Fixed(nn.Cell):
    """A 'model' that returns a fixed prediction, so the loss can be computed by hand."""

    def __init__(self, pred):
        super().__init__()
        self.pred = ms.Tensor(pred)

    def construct(self, x, t):
        return self.pred + 0.0 * x


def test_q_sample_mean_and_variance(rng):
    s = NoiseSchedule(100, "linear")
    diff = GaussianDiffusion(Fixed(np.zeros((1,), np.float32)), s)
    n = 20000
    x0 = np.full((n, 1, 2, 2), 0.7, np.float32)
    for t in (0, 30, 99):
        noise = rng.standard_normal(x0.shape, dtype=np.float32)
        xt = diff.q_sample(ms.Tensor(x0), ms.Tensor(np.full((n,), t, np.int32)), ms.Tensor(noise)).asnumpy()
        ab = s.alphas_cumprod[t]
        assert xt.mean() == pytest.approx(np.sqrt(ab) * 0.7, abs=4 * np.sqrt((1 - ab) / xt.size) + 1e-6)
        assert xt.var() == pytest.approx(1 - ab, rel=0.03)


@pytest.mark.parametrize("loss_type", ["l1", "l2", "huber"])
@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_loss_against_numpy(loss_type, objective, gamma, rng):
    s = NoiseSchedule(50, "cosine")
    b = 6
    x0 = rng.uniform(-1, 1, (b, 1, 3, 3)).astype(np.float32)
    noise = (2.5 * rng.standard_normal((b, 1, 3, 3))).astype(np.float32)  # both Huber branches
    pred = rng.standard_normal((b, 1, 3, 3)).astype(np.float32)
    t = np.array([0, 5, 17, 30, 42, 49], np.int32)
    diff = GaussianDiffusion(Fixed(pred), s, objective=objective, loss_type=loss_type, p2_gamma=gamma, p2_k=1.0)
    got = diff(ms.Tensor(x0), ms.Tensor(t), ms.Tensor(noise)).asnumpy()

    a = s.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    sig = s.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    target = {"eps": noise, "x0": x0, "v": a * noise - sig * x0}[objective]
    d = np.abs(pred - target)
    elem = {"l1": d, "l2": d ** 2, "huber": np.where(d < 1, 0.5 * d ** 2, d - 0.5)}[loss_type]
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    want = (elem.reshape(b, -1).mean(1) * (1 + snr) ** -gamma).mean()
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_weights_the_x0_error_alike_for_every_objective(gamma, rng):
    # Min-SNR-gamma: whichever target the model predicts, the weighted L2 loss is
    # min(SNR, gamma) * |x0_hat - x0|^2 for the same implied clean-image estimate x0_hat.
    s = NoiseSchedule(50, "cosine")
    b = 6
    x0 = rng.uniform(-1, 1, (b, 1, 3, 3))
    x0_hat = x0 + 0.3 * rng.standard_normal(x0.shape)
    noise = rng.standard_normal(x0.shape)
    t = np.array([0, 5, 17, 30, 42, 49], np.int32)
    a = s.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    sig = s.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    eps_hat = (a * x0 + sig * noise - a * x0_hat) / sig   # the noise x0_hat implies for x_t
    preds = {"eps": eps_hat, "x0": x0_hat, "v": a * eps_hat - sig * x0_hat}
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    want = (np.minimum(snr, gamma) * ((x0_hat - x0) ** 2).reshape(b, -1).mean(1)).mean()
    for objective, pred in preds.items():
        diff = GaussianDiffusion(Fixed(pred.astype(np.float32)), s, objective=objective, loss_type="l2",
                                 min_snr_gamma=gamma)
        got = diff(ms.Tensor(x0.astype(np.float32)), ms.Tensor(t), ms.Tensor(noise.astype(np.float32))).asnumpy()
        assert got == pytest.approx(want, rel=1e-3), objective


def test_min_snr_multiplies_p2_and_is_off_at_zero():
    s = NoiseSchedule(100, "cosine")
    np.testing.assert_array_equal(s.loss_weights("eps", 0.5, 1.0, 0.0), s.p2_weights(0.5, 1.0))
    w = s.loss_weights("eps", 0.5, 1.0, 5.0)
    np.testing.assert_allclose(w, s.p2_weights(0.5, 1.0) * np.minimum(s.snr, 5.0) / s.snr, rtol=1e-12)
    noisy = s.snr <= 5.0
    assert noisy.any() and (~noisy).any()
    np.testing.assert_allclose(w[noisy], s.p2_weights(0.5, 1.0)[noisy], rtol=1e-12)  # eps: weight 1 there


def test_bad_objective_and_loss_are_errors():
    s = NoiseSchedule(10, "cosine")
    with pytest.raises(ValueError, match="objective"):
        GaussianDiffusion(Fixed(np.zeros(1, np.float32)), s, objective="score")
    with pytest.raises(ValueError, match="loss type"):
        GaussianDiffusion(Fixed(np.zeros(1, np.float32)), s, loss_type="l3")


def test_graph_mode_equals_pynative_loss(rng):
    
    from ddpm_ms.models import UNet

    ms.set_seed(0)
    net = UNet(UNetConfig(image_size=8, channels=1, dim=8, dim_mults=(1, 2)))
    diff = GaussianDiffusion(net, NoiseSchedule(100, "cosine"), loss_type="huber", p2_gamma=0.5)
    x0 = ms.Tensor(rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32))
    t = ms.Tensor(np.array([0, 20, 50, 99], np.int32))
    noise = ms.Tensor(rng.standard_normal((4, 1, 8, 8), dtype=np.float32))
    eager = float(diff(x0, t, noise).asnumpy())
    graph = float(ms.jit(diff.construct)(x0, t, noise).asnumpy())
    assert graph == pytest.approx(eager, rel=1e-5)
    assert eager > 0
