"""The sampling loop shared by every scheduler: noise in, images (and a trajectory) out."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from tqdm.auto import tqdm

_COMPILED = {}


def compiled(model):
    """`model` with its forward pass compiled once (ms.jit), cached per model object."""
    key = id(model)
    if key not in _COMPILED or _COMPILED[key][0] is not model:
        _COMPILED[key] = (model, ms.jit(model.construct))
    return _COMPILED[key][1]


def sample(model, scheduler, shape, num_inference_steps=None, seed=0, trajectory_every=None,
           jit=True, progress=True):
    """Draw `shape[0]` images with `scheduler` from pure noise.

    Returns (images, trajectory): images is a float32 NumPy array of `shape`; trajectory is a
    list of (t, x_t) NumPy pairs every `trajectory_every` steps, beginning with the noise and
    ending with the final images (empty when trajectory_every is None). The same seed gives the
    same images: noise comes from NumPy's generator, not from the device.
    """
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    was_training = model.training
    model.set_train(False)
    forward = compiled(model) if jit else model
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal(shape, dtype=np.float32))
    trajectory = [(int(scheduler.num_train_timesteps), x.asnumpy())] if trajectory_every else []
    steps = scheduler.timesteps
    try:
        for i, t in enumerate(tqdm(steps, desc="sampling", disable=not progress, leave=False)):
            t_batch = ms.Tensor(np.full((shape[0],), t, dtype=np.float32))
            model_output = forward(x, t_batch)
            noise = ms.Tensor(rng.standard_normal(shape, dtype=np.float32)) if i < len(steps) - 1 else None
            x = scheduler.step(model_output, int(t), x, noise=noise).prev_sample
            if trajectory_every and ((i + 1) % trajectory_every == 0 or i == len(steps) - 1):
                trajectory.append((int(scheduler.previous_timestep(t)) + 1, x.asnumpy()))
    finally:
        model.set_train(was_training)
    return x.asnumpy(), trajectory
