"""Schedulers with one diffusers-shaped API and the sampling loop that drives any of them."""
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput, spaced_timesteps
from ddpm_ms.sampling.ddim import DDIMScheduler
from ddpm_ms.sampling.ddpm import DDPMScheduler
from ddpm_ms.sampling.dpm_solver import DPMSolverMultistepScheduler
from ddpm_ms.sampling.loop import Frame, compiled, noise_generator, sample, sample_many

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}


def make_scheduler(name: str, schedule, **kwargs) -> Scheduler:
    """A scheduler by its command-line name: "ddpm", "ddim" or "dpm++" (DPM-Solver++ 2M)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, **kwargs)


__all__ = ["SAMPLERS", "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "Frame", "Scheduler",
           "SchedulerOutput", "compiled", "make_scheduler", "noise_generator", "sample", "sample_many",
           "spaced_timesteps"]
