"""DDPM ancestral sampling (Ho et al. 2020), shaped like diffusers' DDPMScheduler.

With fewer inference steps than training steps the chain runs on a respaced subset of
timesteps whose betas are recomputed from alpha-bar, as in improved DDPM (Nichol & Dhariwal 2021).
"""
from __future__ import annotations

import numpy as np

from ddpm_ms.diffusion.schedule import NoiseSchedule
from ddpm_ms.registry import SAMPLERS, Sampler
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput

VARIANCE_TYPES = ("fixed_small", "fixed_large")


class DDPMScheduler(Scheduler):
    """variance_type: "fixed_small" (the posterior variance, beta-tilde) or "fixed_large" (beta)."""

    def __init__(self, schedule: NoiseSchedule, prediction_type="eps", variance_type="fixed_small",
                 clip_sample=True, clip_range=1.0, timestep_spacing=None):
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance_type {variance_type!r}; use one of {VARIANCE_TYPES}")
        self.variance_type = variance_type
        super().__init__(schedule, prediction_type, clip_sample, clip_range, timestep_spacing)

    def coefficients(self, t: int) -> dict:
        """The float64 numbers one step from t to its predecessor uses: the posterior mean
        coef_x0 * x0 + coef_xt * x_t and the standard deviation of the added noise."""
        prev = self.previous_timestep(t)
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(prev)
        beta = 1.0 - ab_t / ab_prev
        if self.variance_type == "fixed_small":
            variance = (1.0 - ab_prev) / (1.0 - ab_t) * beta
        else:
            variance = beta
        return {"coef_x0": np.sqrt(ab_prev) * beta / (1.0 - ab_t),
                "coef_xt": np.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t),
                "std": float(np.sqrt(variance)) if prev >= 0 else 0.0}

    def needs_noise(self, t: int) -> bool:
        return self.previous_timestep(t) >= 0

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        """One ancestral step x_t -> x_prev. `noise` (shaped like sample) is required unless this
        is the last step."""
        c = self.coefficients(timestep)
        x0 = self.predict_x0(model_output, timestep, sample)
        prev = float(c["coef_x0"]) * x0 + float(c["coef_xt"]) * sample
        if c["std"] > 0:
            if noise is None:
                raise ValueError(f"the step from t={timestep} adds noise: pass `noise`")
            prev = prev + c["std"] * noise
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


SAMPLERS.register(Sampler("ddpm", DDPMScheduler, "DDPM", options=("variance_type",)))
