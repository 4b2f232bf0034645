"""The sampling loop shared by every scheduler: noise in, images (and a trajectory) out.

Per step the loop calls the compiled model once and the scheduler's `step` once; the image
tensors never leave the device until the end. Noise comes from one seeded MindSpore
`StandardNormal` generator per call, so the same seed gives the same images on the same device.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm.auto import tqdm

_COMPILED = {}
_SEED_STREAM = 20_200_619  # StandardNormal treats seed = seed2 = 0 as "random": keep the first one fixed


class Frame(NamedTuple):
    """One trajectory entry: x_t after a step and the model's x0 estimate at that step (None for
    the starting noise). t counts as the DDPM paper does, 1-based: T for the starting noise, 0 for
    the final images, and t = k + 1 for a sample at the scheduler's 0-based timestep k."""
    t: int
    sample: np.ndarray
    pred_x0: np.ndarray | None


def compiled(model):
    """`model` with its forward pass compiled once (ms.jit), cached per model object."""
    key = id(model)
    if key not in _COMPILED or _COMPILED[key][0] is not model:
        _COMPILED[key] = (model, ms.jit(model.construct))
    return _COMPILED[key][1]


def noise_generator(seed: int, stream: int = 0):
    """A seeded normal generator on the current device: each call draws the next block. `stream`
    (the batch index when sampling in batches) gives independent noise for the same seed, so
    seeds 0 and 1 never share a batch."""
    for name, value in (("seed", seed), ("stream", stream)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return ops.StandardNormal(seed=_SEED_STREAM + int(stream), seed2=int(seed))


def sample(model, scheduler, shape, num_inference_steps=None, seed=0, trajectory_every=None, jit=True,
           progress=True, x_T=None, stream=0):
    """Draw `shape[0]` images with `scheduler` (any of DDPM, DDIM, DPM-Solver++).

    num_inference_steps: calls `scheduler.set_timesteps` first (else the scheduler's current grid).
    x_T: the starting noise (a tensor or array of `shape`); drawn from `seed` when None.
    stream: selects an independent noise stream for the same seed (see `noise_generator`).
    trajectory_every: also return a Frame every k steps, starting with the noise and ending with
    the final images (an empty list when None).
    Returns (images as a float32 NumPy array of `shape`, trajectory).
    """
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    else:
        scheduler.reset()
    if trajectory_every is not None and int(trajectory_every) < 1:
        raise ValueError(f"trajectory_every must be a positive integer, got {trajectory_every}")
    shape = tuple(int(s) for s in shape)
    normal = noise_generator(seed, stream)
    if x_T is None:
        x = normal(shape)
    else:
        x = x_T if isinstance(x_T, ms.Tensor) else ms.Tensor(np.asarray(x_T, dtype=np.float32))
        if tuple(x.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x.shape)}, expected {shape}")
    was_training = model.training
    model.set_train(False)
    forward = compiled(model) if jit else model
    ones = ops.ones((shape[0],), ms.float32)
    kept = [(scheduler.num_train_timesteps, x, None)] if trajectory_every else []
    steps = scheduler.timesteps
    try:
        for i, t in enumerate(tqdm(steps, desc="sampling", disable=not progress, leave=False)):
            t = int(t)
            model_output = forward(x, ones * float(t))
            noise = normal(shape) if scheduler.needs_noise(t) else None
            out = scheduler.step(model_output, t, x, noise=noise)
            x = out.prev_sample
            if trajectory_every and ((i + 1) % trajectory_every == 0 or i == len(steps) - 1):
                kept.append((scheduler.previous_timestep(t) + 1, x, out.pred_original_sample))
    finally:
        model.set_train(was_training)
    trajectory = [Frame(t, s.asnumpy(), None if p is None else p.asnumpy()) for t, s, p in kept]
    return x.asnumpy(), trajectory


def sample_many(model, scheduler, num, image_shape, batch_size=64, num_inference_steps=None, seed=0,
                trajectory_every=None, jit=True, progress=True):
    """`num` images of `image_shape` (C, H, W) in batches of at most `batch_size`; batch b uses
    noise stream b of `seed`. Returns (images (num, C, H, W), trajectory of the first batch)."""
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be positive, got {num} and {batch_size}")
    images, trajectory = [], []
    sizes = [min(batch_size, num - start) for start in range(0, num, batch_size)]
    bar = tqdm(total=num, desc="images", unit="img", disable=not progress or len(sizes) == 1)
    for b, size in enumerate(sizes):
        batch, traj = sample(model, scheduler, (size, *image_shape), num_inference_steps, seed=seed,
                             trajectory_every=trajectory_every if b == 0 else None, jit=jit, progress=progress,
                             stream=b)
        images.append(batch)
        trajectory = trajectory or traj
        bar.update(size)
    bar.close()
    return np.concatenate(images), trajectory
