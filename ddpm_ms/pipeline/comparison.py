"""The same noise drawn by every sampler, for a side-by-side figure (sample.py --compare).

    for d in compare_samplers(pipe, 16, seed=0):
        print(d.sampler, d.steps, d.seconds)          # d.images: uint8 (N, C, H, W)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ddpm_ms.registry import SAMPLERS


@dataclass
class Drawn:
    """One sampler's images and what they cost."""
    sampler: str
    steps: int
    seconds: float
    images: np.ndarray


def compare_samplers(pipe, num_images: int, clip_sample: bool = True, timestep_spacing: str | None = None,
                     lambda_min_clipped: float | None = None, **call) -> list[Drawn]:
    """Every registered sampler at its default step count on the same noise, timed. `pipe` is a
    pipeline or one of its tasks (img2img, inpaint); clip_sample and timestep_spacing go to every
    scheduler, lambda_min_clipped to those that take it; `call` is the rest of the pipeline call
    (seed, batch_size, class_labels, guidance, progress)."""
    drawn = []
    for name in SAMPLERS:
        takes_lambda = "lambda_min_clipped" in SAMPLERS[name].options
        scheduler = pipe.scheduler(name, clip_sample=clip_sample, timestep_spacing=timestep_spacing,
                                   lambda_min_clipped=lambda_min_clipped if takes_lambda else None)
        steps = scheduler.num_inference_steps
        tic = time.perf_counter()
        images = pipe(num_images, scheduler=scheduler, **call).images
        drawn.append(Drawn(name, steps, time.perf_counter() - tic, images))
    return drawn
