"""Gaussian diffusion: the forward process q(x_t | x_0) and the training loss."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ddpm_ms.diffusion.schedule import NoiseSchedule


def extract(values, t, ndim):
    """values[t] reshaped to broadcast over a batch of `ndim`-dimensional images."""
    out = ops.gather(values, t, 0)
    return out.reshape((t.shape[0],) + (1,) * (ndim - 1))


def forward_noise(sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, x0, t, noise):
    """x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise, for integer timesteps t (b,)."""
    return (extract(sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def huber(pred, target, delta=1.0):
    """Elementwise Huber (smooth L1) loss, quadratic below `delta`, linear above: with m = min(err,
    delta), 0.5 m^2 / delta + (err - m). (No select: the backward of ops.where emits ZerosLikeExt,
    whose documentation names Ascend only; scripts/check_ops.py.)"""
    err = ops.abs(pred - target)
    m = ops.minimum(err, delta)
    return 0.5 * m * m / delta + (err - m)


class GaussianDiffusion(nn.Cell):
    """Wraps a denoiser; `construct(x0, t, noise[, y])` returns the weighted training loss. `y`,
    the class labels of a class-conditional denoiser, arrive with the dropped ones already set
    to "no class" (the trainer draws which, so a seed fixes them like t and the noise).

    objective: what the model predicts, "eps" (the noise), "x0" or "v" (Salimans & Ho 2022).
    loss_type: "l1", "l2" or "huber". The weight of timestep t is p2's (k + SNR)^-p2_gamma times
    Min-SNR's (`NoiseSchedule.loss_weights`); p2_gamma = 0 and min_snr_gamma = 0 weight every t alike.
    """

    def __init__(self, model: nn.Cell, schedule: NoiseSchedule, objective="eps", loss_type="huber",
                 p2_gamma=0.0, p2_k=1.0, min_snr_gamma=0.0):
        super().__init__()
        if objective not in ("eps", "x0", "v"):
            raise ValueError(f"unknown objective {objective!r}; use eps, x0 or v")
        if loss_type not in ("l1", "l2", "huber"):
            raise ValueError(f"unknown loss type {loss_type!r}; use l1, l2 or huber")
        self.model = model
        self.schedule = schedule
        self.num_timesteps = schedule.timesteps
        self.objective, self.loss_type = objective, loss_type
        self.sqrt_alphas_cumprod = schedule.tensor("sqrt_alphas_cumprod")
        self.sqrt_one_minus_alphas_cumprod = schedule.tensor("sqrt_one_minus_alphas_cumprod")
        self.loss_weight = ms.Tensor(schedule.loss_weights(objective, p2_gamma, p2_k, min_snr_gamma).astype("float32"))

    def q_sample(self, x0, t, noise):
        """x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise."""
        return forward_noise(self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod, x0, t, noise)

    def target(self, x0, t, noise):
        if self.objective == "eps":
            return noise
        if self.objective == "x0":
            return x0
        return (extract(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)

    def elementwise_loss(self, pred, target):
        if self.loss_type == "l1":
            return ops.abs(pred - target)
        if self.loss_type == "l2":
            err = pred - target
            return err * err  # not ops.square: its backward emits PowTensorScalar, documented Ascend-only
        return huber(pred, target)

    def p_losses(self, x0, t, noise, y=None):
        """Per-sample loss: mean over pixels of the elementwise loss, times the weight of t."""
        x_t = self.q_sample(x0, t, noise)
        t_in = t.astype(ms.float32)
        pred = self.model(x_t, t_in) if y is None else self.model(x_t, t_in, y)
        pred = pred.astype(ms.float32)  # float32 loss under mixed precision
        loss = self.elementwise_loss(pred, self.target(x0, t, noise))
        loss = loss.reshape(loss.shape[0], -1).mean(axis=1)
        return loss * ops.gather(self.loss_weight, t, 0)

    def construct(self, x0, t, noise, y=None):
        return self.p_losses(x0, t, noise, y).mean()
