"""DDIM (Song, Meng & Ermon 2021), shaped like diffusers' DDIMScheduler.

x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z, with
sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).
eta = 0 is the deterministic ODE-like sampler; eta = 1 over all T steps is DDPM's
ancestral sampler with the posterior variance. eps is re-derived from the (clipped) x0 estimate,
so a clipped x0 and the direction it implies stay consistent.
"""
from __future__ import annotations

import numpy as np

from ddpm_ms.diffusion.schedule import NoiseSchedule
from ddpm_ms.registry import SAMPLERS, Sampler
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput


class DDIMScheduler(Scheduler):
    """eta in [0, 1] scales the noise added per step; timestep_spacing: "leading" (default),
    "trailing" or "linspace" (see `spaced_timesteps`)."""

    def __init__(self, schedule: NoiseSchedule, eta=0.0, prediction_type="eps", clip_sample=True,
                 clip_range=1.0, timestep_spacing=None):
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        self.eta = float(eta)
        super().__init__(schedule, prediction_type, clip_sample, clip_range, timestep_spacing)

    def default_inference_steps(self) -> int:
        return min(50, self.num_train_timesteps)

    def sigma(self, t: int) -> float:
        """Standard deviation of the noise the step from t adds."""
        prev = self.previous_timestep(t)
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(prev)
        return self.eta * float(np.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)))

    def needs_noise(self, t: int) -> bool:
        return self.sigma(t) > 0

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        ab_prev = self.alpha_bar(self.previous_timestep(timestep))
        sigma = self.sigma(timestep)
        x0 = self.predict_x0(model_output, timestep, sample)
        eps = self.eps_from_x0(x0, timestep, sample)
        direction = float(np.sqrt(max(1.0 - ab_prev - sigma ** 2, 0.0)))
        prev = float(np.sqrt(ab_prev)) * x0 + direction * eps
        if sigma > 0:
            if noise is None:
                raise ValueError(f"the step from t={timestep} adds noise (eta={self.eta}): pass `noise`")
            prev = prev + sigma * noise
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


SAMPLERS.register(Sampler("ddim", DDIMScheduler, "DDIM", options=("eta",)))
