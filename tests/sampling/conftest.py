import mindspore as ms
import pytest
from mindspore import nn, ops


class GaussianOracle(nn.Cell):
    """The exact denoiser for data x0 ~ N(mu, s^2) per pixel. With ab = alpha-bar_t,
    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab); it answers in the
    parameterisation `prediction` (eps, x0 or v) so every scheduler conversion is exercised."""

    def __init__(self, schedule, mu, s, prediction="eps"):
        super().__init__()
        self.ab = schedule.tensor("alphas_cumprod")
        self.mu, self.var = float(mu), float(s) ** 2
        self.prediction = prediction

    def construct(self, x, t):
        ab = ops.gather(self.ab, t.astype(ms.int32), 0).reshape(-1, 1, 1, 1)
        a, s = ops.sqrt(ab), ops.sqrt(1 - ab)
        eps = s * (x - a * self.mu) / (ab * self.var + 1 - ab)
        if self.prediction == "eps":
            return eps
        x0 = (x - s * eps) / a
        if self.prediction == "x0":
            return x0
        return a * eps - s * x0


@pytest.fixture
def oracle():
    return GaussianOracle
