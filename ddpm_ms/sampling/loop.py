"""The sampling loop shared by every scheduler: noise in, images (and a trajectory) out.

Per step the loop calls the compiled model once and the scheduler's `step` once; the image
tensors never leave the device until the end. A class-conditional model takes one label per
image; with a guidance scale w != 1 the loop runs the batch twice in one call, with the labels
and with "no class", and mixes the outputs as classifier-free guidance does (Ho & Salimans 2022):
out = out_uncond + w (out_cond - out_uncond). w = 1 is the conditional model alone, w = 0 the
unconditional one. guidance_interval (lo, hi) guides only the steps at timesteps lo <= t <= hi and
runs the conditional model alone elsewhere (Kynkaenniemi et al. 2024, "Applying guidance in a limited
interval"): guidance at high noise pulls every image of a class toward the same layout and costs
variety, guidance at low noise does little; the steps outside the interval also cost half as much.
Large w over-exposes the images; guidance_rescale phi (Lin et al. 2024, sec. 3.4,
diffusers' `guidance_rescale`) scales each image's guided output to the standard deviation of its
conditional one and blends: out = phi out_rescaled + (1 - phi) out. Noise comes from one seeded MindSpore
`StandardNormal` generator per call, so the same seed gives the same images on the same device.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm.auto import tqdm

from ddpm_ms.config import check_guidance_interval

_COMPILED = {}
_SEED_STREAM = 20_200_619  # StandardNormal treats seed = seed2 = 0 as "random": keep the first one fixed


class Frame(NamedTuple):
    """One trajectory entry: x_t after a step and the model's x0 estimate at that step (None for
    the starting noise). t counts as the DDPM paper does, 1-based: 0 for the final images and
    t = k + 1 for a sample at the scheduler's 0-based timestep k, the starting noise included (T when
    the chain starts at T-1, 991 when DPM-Solver++ starts at 990)."""
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


def class_label_array(model, class_labels, num: int):
    """`class_labels` (one int, or one per image) as int32 labels for `num` images of `model`;
    None when not given. Label model.num_classes means "no class"."""
    if class_labels is None:
        return None
    n = int(getattr(model, "num_classes", 0))
    if not n:
        raise ValueError("class labels were given, but this model is unconditional (model.num_classes = 0); "
                         "train with --num-classes to condition on labels")
    y = np.asarray(class_labels).reshape(-1)
    if y.size == 1:
        y = np.full(num, y[0])
    if y.size != num or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"class labels must be one integer or {num} of them (one per image), got {y.size} "
                         f"of dtype {y.dtype}")
    if y.min() < 0 or y.max() > n:
        raise ValueError(f"class labels must be in 0..{n - 1} ({n}: no class), got {y.min()}..{y.max()}")
    return y.astype(np.int32)


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., num_classes - 1, 0, 1, ...: every class drawn equally often (the test sets'
    mix), for evaluating and showing a class-conditional model."""
    return (np.arange(num) % num_classes).astype(np.int32)


def rescale_guidance(guided, cond, phi: float):
    """Lin et al. 2024's fix for over-exposure under strong guidance: `guided` rescaled per image to
    the standard deviation of `cond`, blended with weight phi (0: unchanged, 1: fully rescaled)."""
    axes = tuple(range(1, guided.ndim))
    rescaled = guided * (cond.std(axis=axes, keepdims=True) / guided.std(axis=axes, keepdims=True))
    return phi * rescaled + (1.0 - phi) * guided


def sample(model, scheduler, shape, num_inference_steps=None, seed=0, trajectory_every=None, jit=True,
           progress=True, x_T=None, stream=0, class_labels=None, guidance_scale=1.0, guidance_rescale=0.0,
           guidance_interval=None):
    """Draw `shape[0]` images with `scheduler` (any of DDPM, DDIM, DPM-Solver++).

    num_inference_steps: calls `scheduler.set_timesteps` first (else the scheduler's current grid).
    x_T: the starting noise (a tensor or array of `shape`); drawn from `seed` when None.
    stream: selects an independent noise stream for the same seed (see `noise_generator`).
    trajectory_every: also return a Frame every k steps, starting with the noise and ending with
    the final images (an empty list when None).
    class_labels: for a class-conditional model, one int or one per image (None: "no class", the
    unconditional model); guidance_scale: the classifier-free guidance weight w, guidance_rescale its
    over-exposure fix phi in [0, 1], guidance_interval (lo, hi): guide only at timesteps lo <= t <= hi
    (None: every step; see above).
    Returns (images as a float32 NumPy array of `shape`, trajectory).
    """
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    else:
        scheduler.reset()
    if trajectory_every is not None and int(trajectory_every) < 1:
        raise ValueError(f"trajectory_every must be a positive integer, got {trajectory_every}")
    shape = tuple(int(s) for s in shape)
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0 (1: no guidance), got {guidance_scale}")
    if not 0 <= guidance_rescale <= 1:
        raise ValueError(f"guidance_rescale must be in [0, 1] (0: off), got {guidance_rescale}")
    lo, hi = check_guidance_interval(guidance_interval) or (0, scheduler.num_train_timesteps)
    labels = class_label_array(model, class_labels, shape[0])
    guided = labels is not None and float(guidance_scale) != 1.0
    y = None if labels is None else ms.Tensor(labels)
    if guided:  # the labels, then "no class", in one batch of twice the size
        y_pair = ms.Tensor(np.concatenate([labels, np.full(shape[0], model.num_classes, np.int32)]))
        ones_pair = ops.ones((2 * shape[0],), ms.float32)
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
    w, phi = float(guidance_scale), float(guidance_rescale)
    steps = scheduler.timesteps
    kept = [(int(steps[0]) + 1, x, None)] if trajectory_every else []  # the noise the chain starts from
    try:
        for i, t in enumerate(tqdm(steps, desc="sampling", disable=not progress, leave=False)):
            t = int(t)
            if guided and lo <= t <= hi:
                cond, uncond = ops.split(forward(ops.cat((x, x)), ones_pair * float(t), y_pair), shape[0])
                model_output = uncond + w * (cond - uncond)
                if phi:
                    model_output = rescale_guidance(model_output, cond, phi)
            elif y is not None:
                model_output = forward(x, ones * float(t), y)
            else:
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
                trajectory_every=None, jit=True, progress=True, class_labels=None, guidance_scale=1.0,
                guidance_rescale=0.0, guidance_interval=None, x_T=None):
    """`num` images of `image_shape` (C, H, W) in batches of at most `batch_size`; batch b uses
    noise stream b of `seed` (for the starting noise too, unless `x_T`, (num, C, H, W), gives it).
    class_labels: one int or one per image; guidance: see `sample`.
    Returns (images (num, C, H, W), trajectory of the first batch)."""
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be positive, got {num} and {batch_size}")
    if x_T is not None and tuple(np.shape(x_T)) != (num, *image_shape):
        raise ValueError(f"the starting noise has shape {tuple(np.shape(x_T))}, expected {(num, *image_shape)}")
    images, trajectory = [], []
    labels = class_label_array(model, class_labels, num)
    sizes = [min(batch_size, num - start) for start in range(0, num, batch_size)]
    bar = tqdm(total=num, desc="images", unit="img", disable=not progress or len(sizes) == 1)
    for b, size in enumerate(sizes):
        start = b * batch_size
        batch, traj = sample(model, scheduler, (size, *image_shape), num_inference_steps, seed=seed,
                             trajectory_every=trajectory_every if b == 0 else None, jit=jit, progress=progress,
                             stream=b, class_labels=None if labels is None else labels[start:start + size],
                             guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                             guidance_interval=guidance_interval,
                             x_T=None if x_T is None else np.asarray(x_T[start:start + size], np.float32))
        images.append(batch)
        trajectory = trajectory or traj
        bar.update(size)
    bar.close()
    return np.concatenate(images), trajectory
