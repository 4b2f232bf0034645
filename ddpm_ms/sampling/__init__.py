"""Schedulers with a diffusers-shaped API and the sampling loop."""
from ddpm_ms.sampling.ddpm import DDPMScheduler, SchedulerOutput
from ddpm_ms.sampling.loop import compiled, sample

__all__ = ["DDPMScheduler", "SchedulerOutput", "compiled", "sample"]
