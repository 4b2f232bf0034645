"""Schedulers with one diffusers-shaped API and the sampling loop that drives any of them.
Users sample through ddpm_ms.pipeline.DiffusionPipeline, which configures both."""
from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.registry import SAMPLERS
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput, spaced_timesteps
# The order of these imports is the order the samplers register in, and so the order menus list them.
from ddpm_ms.sampling.ddpm import DDPMScheduler  # isort: skip
from ddpm_ms.sampling.ddim import DDIMScheduler  # isort: skip
from ddpm_ms.sampling.dpm_solver import DPMSolverMultistepScheduler  # isort: skip
from ddpm_ms.sampling.editing import Img2Img, Inpaint
from ddpm_ms.sampling.loop import (Frame, balanced_labels, class_label_array, compiled, noise_generator, sample,
                                  sample_batch)
from ddpm_ms.sampling.model_call import ClassifierFreeGuidance


def make_scheduler(name: str, schedule, **kwargs) -> Scheduler:
    """A scheduler by its registered name (ddpm_ms.registry.SAMPLERS: "ddpm", "ddim", "dpm++", "dpm++sde", ...)
    over `schedule`; kwargs go to its constructor."""
    entry = SAMPLERS[name]
    return entry.scheduler(schedule, **entry.fixed, **kwargs)


def scheduler_for(name: str, diffusion, variance: str = "fixed_small", clip: bool = True,
                  timestep_spacing: str | None = None, **options) -> Scheduler:
    """The scheduler `name` for a model trained with the DiffusionConfig `diffusion`: its schedule and
    prediction target. variance: the model's DDPM posterior variance, for the samplers that take one;
    timestep_spacing: None for the scheduler's default grid, or leading / trailing / linspace;
    options: the sampler's own settings (its registry entry's `options`: eta for DDIM, solver_order and
    lambda_min_clipped for DPM-Solver++), None leaving one at its default; another sampler's is an error."""
    entry = SAMPLERS[name]
    options = {k: v for k, v in options.items() if v is not None}
    for key in options:
        if key not in entry.options:
            takers = [n for n in SAMPLERS if key in SAMPLERS[n].options]
            raise ValueError(f"{key} applies to the {' and '.join(takers) or 'no'} sampler(s), not {name!r}")
    if "variance_type" in entry.options:
        options.setdefault("variance_type", variance)
    return make_scheduler(name, NoiseSchedule.from_config(diffusion), prediction_type=diffusion.objective,
                          clip_sample=clip, timestep_spacing=timestep_spacing, **options)


__all__ = ["balanced_labels", "class_label_array", "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "Frame",
           "Scheduler", "SchedulerOutput", "compiled", "make_scheduler", "noise_generator", "sample", "sample_batch",
           "scheduler_for", "spaced_timesteps", "ClassifierFreeGuidance", "Img2Img", "Inpaint"]
