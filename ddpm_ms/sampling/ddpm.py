"""DDPM ancestral sampling (Ho et al. 2020), shaped like diffusers' DDPMScheduler.

The scheduler's per-step coefficients are computed in float64 on the host; the tensors stay
on the device. With fewer inference steps than training steps, the chain runs on a respaced
("trailing") subset of timesteps whose betas are recomputed from alpha-bar, as in improved DDPM.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import ops

from ddpm_ms.diffusion.gaussian import forward_noise
from ddpm_ms.diffusion.schedule import NoiseSchedule


@dataclass
class SchedulerOutput:
    prev_sample: ms.Tensor
    pred_original_sample: ms.Tensor


class DDPMScheduler:
    """prediction_type: "eps", "x0" or "v"; variance_type: "fixed_small" (the posterior
    variance, beta-tilde) or "fixed_large" (beta); clip_sample clamps the predicted x_0 to
    [-clip_range, clip_range] before it is used."""

    def __init__(self, schedule: NoiseSchedule, prediction_type="eps", variance_type="fixed_small",
                 clip_sample=True, clip_range=1.0):
        if prediction_type not in ("eps", "x0", "v"):
            raise ValueError(f"unknown prediction_type {prediction_type!r}; use eps, x0 or v")
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"unknown variance_type {variance_type!r}; use fixed_small or fixed_large")
        self.schedule = schedule
        self.prediction_type, self.variance_type = prediction_type, variance_type
        self.clip_sample, self.clip_range = clip_sample, clip_range
        self.num_train_timesteps = schedule.timesteps
        self.set_timesteps(schedule.timesteps)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Run the chain on `num_inference_steps` timesteps, from T-1 down to near 0."""
        T = self.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be in 1..{T}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        steps = np.round(np.arange(T, 0, -T / num_inference_steps)).astype(np.int64) - 1
        self.timesteps = np.unique(steps)[::-1].copy()
        self._prev = dict(zip(self.timesteps.tolist(), self.timesteps[1:].tolist() + [-1]))

    def previous_timestep(self, t: int) -> int:
        return self._prev[int(t)]

    def coefficients(self, t: int) -> dict:
        """The float64 numbers that one step from t to its predecessor uses."""
        ac = self.schedule.alphas_cumprod
        prev = self.previous_timestep(t)
        ab_t, ab_prev = ac[t], (ac[prev] if prev >= 0 else 1.0)
        beta = 1.0 - ab_t / ab_prev
        if self.variance_type == "fixed_small":
            variance = max((1.0 - ab_prev) / (1.0 - ab_t) * beta, 1e-20)
        else:
            variance = beta
        return {
            "sqrt_ab": np.sqrt(ab_t), "sqrt_1m_ab": np.sqrt(1.0 - ab_t),
            "coef_x0": np.sqrt(ab_prev) * beta / (1.0 - ab_t),
            "coef_xt": np.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t),
            "std": np.sqrt(variance) if prev >= 0 else 0.0,
        }

    def predict_x0(self, model_output, t: int, sample, c=None):
        c = c or self.coefficients(t)
        if self.prediction_type == "eps":
            return (sample - float(c["sqrt_1m_ab"]) * model_output) / float(c["sqrt_ab"])
        if self.prediction_type == "x0":
            return model_output
        return float(c["sqrt_ab"]) * sample - float(c["sqrt_1m_ab"]) * model_output

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        """One ancestral step x_t -> x_{prev}. `noise` (same shape as sample) is required
        unless this is the last step."""
        c = self.coefficients(timestep)
        x0 = self.predict_x0(model_output, timestep, sample, c)
        if self.clip_sample:
            x0 = ops.clamp(x0, -self.clip_range, self.clip_range)
        mean = float(c["coef_x0"]) * x0 + float(c["coef_xt"]) * sample
        if c["std"] > 0:
            if noise is None:
                raise ValueError(f"step from t={timestep} adds noise: pass `noise`")
            mean = mean + float(c["std"]) * noise
        return SchedulerOutput(prev_sample=mean, pred_original_sample=x0)

    def add_noise(self, original, noise, timesteps):
        """Forward process q(x_t | x_0) for integer `timesteps` (array-like of length batch)."""
        t = ms.Tensor(np.asarray(timesteps, dtype=np.int32))
        return forward_noise(self.schedule.tensor("sqrt_alphas_cumprod"),
                        self.schedule.tensor("sqrt_one_minus_alphas_cumprod"), original, t, noise)
