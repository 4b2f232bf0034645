"""Schedulers with one diffusers-shaped API and the sampling loop that drives any of them.
Users sample through ddpm_ms.pipeline.DiffusionPipeline, which configures both."""
from functools import partial

from ddpm_ms.sampling.base import Scheduler, SchedulerOutput, spaced_timesteps
from ddpm_ms.sampling.ddim import DDIMScheduler
from ddpm_ms.sampling.ddpm import DDPMScheduler
from ddpm_ms.sampling.dpm_solver import DPMSolverMultistepScheduler
from ddpm_ms.sampling.editing import Img2Img, Inpaint
from ddpm_ms.sampling.loop import (Frame, balanced_labels, class_label_array, compiled, noise_generator, sample,
                                  sample_batch)
from ddpm_ms.sampling.model_call import ClassifierFreeGuidance

# Command-line names: "dpm++" is DPM-Solver++ 2M on the ODE, "dpm++sde" the same multistep solver
# on the SDE (diffusers' algorithm_type="sde-dpmsolver++").
SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler,
            "dpm++sde": partial(DPMSolverMultistepScheduler, algorithm_type="sde-dpmsolver++")}


def make_scheduler(name: str, schedule, **kwargs) -> Scheduler:
    """A scheduler by its command-line name: "ddpm", "ddim", "dpm++" (DPM-Solver++ 2M) or "dpm++sde"
    (DPM-Solver++ 2M SDE)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, **kwargs)


def scheduler_for(name: str, diffusion, variance: str = "fixed_small", eta: float | None = None, clip: bool = True,
                  timestep_spacing: str | None = None, lambda_min_clipped: float | None = None,
                  solver_order: int | None = None) -> Scheduler:
    """The scheduler `name` for a model trained with the DiffusionConfig `diffusion`: its schedule and
    prediction target; variance: DDPM's posterior variance; DDIM is deterministic unless `eta` is given.
    timestep_spacing: None for the scheduler's default grid, or leading / trailing / linspace;
    lambda_min_clipped (DPM-Solver++ only): None for its default, else the lowest log-SNR visited;
    solver_order (DPM-Solver++ only): None for 2 (2M), or 1 or 3 (3M, the ODE only)."""
    from ddpm_ms.diffusion import NoiseSchedule

    kwargs = {"prediction_type": diffusion.objective, "clip_sample": clip, "timestep_spacing": timestep_spacing}
    if lambda_min_clipped is not None:
        if not name.startswith("dpm++"):
            raise ValueError(f"lambda_min_clipped applies to the DPM-Solver++ samplers, not {name!r}")
        kwargs["lambda_min_clipped"] = lambda_min_clipped
    if solver_order is not None:
        if not name.startswith("dpm++"):
            raise ValueError(f"solver_order applies to the DPM-Solver++ samplers, not {name!r}")
        kwargs["solver_order"] = solver_order
    if name == "ddpm":
        kwargs["variance_type"] = variance
    if eta is not None and name != "ddim":
        raise ValueError(f"eta applies to the DDIM sampler, not {name!r}")
    if name == "ddim":
        kwargs["eta"] = 0.0 if eta is None else eta
    return make_scheduler(name, NoiseSchedule.from_config(diffusion), **kwargs)


__all__ = ["SAMPLERS", "balanced_labels", "class_label_array", "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "Frame", "Scheduler",
           "SchedulerOutput", "compiled", "make_scheduler", "noise_generator", "sample", "sample_batch",
           "scheduler_for", "spaced_timesteps", "ClassifierFreeGuidance", "Img2Img", "Inpaint"]
