"""Diffusion math: noise schedules, the forward process and the training loss."""
from ddpm_ms.diffusion.gaussian import GaussianDiffusion, extract, forward_noise, huber
from ddpm_ms.diffusion.schedule import NoiseSchedule

__all__ = ["GaussianDiffusion", "NoiseSchedule", "extract", "forward_noise", "huber"]
