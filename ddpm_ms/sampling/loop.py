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
Large w over-exposes the images; guidance_rescale fixes that (ddpm_ms/sampling/model_call.py).
Loss guidance (ddpm_ms/sampling/loss_guidance.py) moves x_t along the gradient of a loss on the
predicted clean image before the scheduler's step; image-to-image and inpainting
(ddpm_ms/sampling/editing.py) start from a user's image and keep part of it. Noise comes from one seeded MindSpore
`StandardNormal` generator per call, so the same seed gives the same images on the same device.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm.auto import tqdm

from ddpm_ms.config import check_guidance_interval
from ddpm_ms.sampling.editing import batch_images, img2img_start, repaint_path
from ddpm_ms.sampling.loss_guidance import NO_X0_GRADIENT, as_terms, move_through_model, move_through_x0
from ddpm_ms.sampling.model_call import denoise, rescale_guidance  # noqa: F401 (rescale_guidance: re-exported)

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


def sample(model, scheduler, shape, num_inference_steps=None, seed=0, trajectory_every=None, jit=True,
           progress=True, x_T=None, stream=0, class_labels=None, guidance_scale=1.0, guidance_rescale=0.0,
           guidance_interval=None, loss_guidance=None, guidance_through_model=False, image=None, strength=1.0,
           mask=None, jump_length=1, jump_n_sample=1):
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
    loss_guidance: LossGuidance terms (ColorGuidance, TextGuidance, ...; see
    ddpm_ms.sampling.loss_guidance), each with its scale and interval; guidance_through_model: take
    every term's gradient through the denoiser too (variant (b)), not only the terms that ask for it
    (TextGuidance does), instead of through the x0 formula only.
    image: start from this image ((C, H, W) or one per image, in [-1, 1]) noised to `strength`
    (image-to-image); mask (1 = repaint, 0 = keep; 1 or C channels): inpaint, keeping the image where
    the mask is 0, with RePaint's resampling jumps when jump_n_sample > 1 (see ddpm_ms.sampling.editing).
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
    terms = [term for term in as_terms(loss_guidance) if term.scale > 0]
    if any(not (guidance_through_model or term.through_model) for term in terms) and scheduler.prediction_type == "x0":
        raise ValueError(NO_X0_GRADIENT)
    image, keep = _editing_inputs(image, strength, mask, shape)
    if keep is not None and jump_n_sample > 1 and scheduler.multistep:
        raise ValueError(f"resampling jumps (jump_n_sample > 1) step back, and {type(scheduler).__name__} builds each "
                         "step on the previous ones: inpaint with jumps using the ddpm or ddim sampler")
    in_graph = getattr(model, "guidance_in_graph", False)  # an exported graph (ddpm_ms.pipeline.mindir) guides itself
    if in_graph and (float(guidance_rescale) or terms):
        raise ValueError("an exported MindIR denoiser takes the guidance scale only: sample it without "
                         "guidance_rescale and loss guidance (or from the pipeline's weights)")
    y = None if labels is None else ms.Tensor(labels)
    if guided and not in_graph:  # the labels, then "no class", in one batch of twice the size
        y_pair = ms.Tensor(np.concatenate([labels, np.full(shape[0], model.num_classes, np.int32)]))
    normal = noise_generator(seed, stream)
    if x_T is None:
        x = normal(shape)
    else:
        x = x_T if isinstance(x_T, ms.Tensor) else ms.Tensor(np.asarray(x_T, dtype=np.float32))
        if tuple(x.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x.shape)}, expected {shape}")
    full_grid = None
    if image is not None:
        skip = img2img_start(len(scheduler.timesteps), strength)
        if skip == len(scheduler.timesteps):  # strength 0: nothing to denoise
            done = image.asnumpy()
            return done, [Frame(0, done, None)] if trajectory_every else []
        if skip:  # SDEdit: start from the image noised to the first remaining timestep (the grid is put back after)
            full_grid = scheduler.timesteps.copy()
            scheduler.set_timesteps(timesteps=full_grid[skip:])
            x = scheduler.add_noise(image, x, np.full(shape[0], scheduler.timesteps[0]))
    steps = scheduler.timesteps
    path = repaint_path(len(steps), jump_length, jump_n_sample) if keep is not None else list(range(len(steps) + 1))
    was_training = model.training
    model.set_train(False)
    forward = compiled(model) if jit and not in_graph else model
    ones = ops.ones((shape[0],), ms.float32)
    w, phi = float(guidance_scale), float(guidance_rescale)
    timestep = [int(t) for t in steps] + [-1]  # the timestep of each grid position; -1: the clean image
    kept = [(timestep[0] + 1, x, None)] if trajectory_every else []  # the noise the chain starts from
    try:
        for k in tqdm(range(1, len(path)), desc="sampling", disable=not progress, leave=False):
            here, there = path[k - 1], path[k]
            t, prev = timestep[here], timestep[there]
            if there < here:  # a RePaint jump: one step back up by the forward process
                x = _renoise(scheduler, x, t, prev, normal(shape))
                x0 = None
            else:
                if in_graph:  # the graph mixes the outputs; w = 1 outside the interval
                    w_t = w if guided and lo <= t <= hi else 1.0
                    model_output = forward(x, ones * float(t), *(() if y is None else (y, w_t)))
                else:
                    if guided and lo <= t <= hi:
                        cond = (y_pair, w) + ((phi,) if phi else ())
                    else:
                        cond = () if y is None else (y,)
                    x, model_output = _guided_output(model, forward, scheduler, x, ones * float(t), t, cond,
                                                     [term for term in terms if term.applies_at(t)],
                                                     guidance_through_model, jit)
                noise = normal(shape) if scheduler.needs_noise(t) else None
                out = scheduler.step(model_output, t, x, noise=noise)
                x, x0 = out.prev_sample, out.pred_original_sample
                if keep is not None:  # RePaint: the kept pixels are the image noised to where the step landed
                    known = image if prev < 0 else scheduler.add_noise(image, normal(shape), np.full(shape[0], prev))
                    x = ops.select(keep, known, x)
            if trajectory_every and (k % trajectory_every == 0 or k == len(path) - 1):
                kept.append((prev + 1, x, x0))
    finally:
        model.set_train(was_training)
        if full_grid is not None:
            scheduler.set_timesteps(timesteps=full_grid)
    trajectory = [Frame(t, s.asnumpy(), None if p is None else p.asnumpy()) for t, s, p in kept]
    return x.asnumpy(), trajectory


def _editing_inputs(image, strength, mask, shape):
    """The image (a tensor) and the mask of pixels to keep (a boolean tensor of `shape`), checked."""
    if image is None:
        if mask is not None:
            raise ValueError("a mask says which pixels of an image to repaint: pass the image too")
        if strength != 1:
            raise ValueError(f"strength {strength} applies to image-to-image: pass an image (or leave strength at 1)")
        return None, None
    image = batch_images(image, shape[0], shape[1:], "image")
    if image.shape[1] != shape[1]:
        raise ValueError(f"the image has {image.shape[1]} channel(s); the model makes {shape[1]}")
    mask = batch_images(mask, shape[0], shape[1:], "mask")
    keep = None if mask is None else ms.Tensor(np.ascontiguousarray(np.broadcast_to(mask < 0.5, shape)))
    return ms.Tensor(image), keep


def _renoise(scheduler, x, t_from: int, t_to: int, noise):
    """x at timestep t_from (-1: clean) carried forward to the noisier t_to: q(x_to | x_from)."""
    ratio = scheduler.alpha_bar(t_to) / scheduler.alpha_bar(t_from)
    return float(np.sqrt(ratio)) * x + float(np.sqrt(1.0 - ratio)) * noise


def _guided_output(model, forward, scheduler, x, t_vec, t: int, cond, terms, through_model: bool, jit: bool):
    """(x, the model output) for the step from t: x moved by the loss-guidance terms that apply (if any),
    first those differentiated through the model (through_model, or the term asks), then the others
    through the x0 formula with the model output at the unmoved x; the output from the model call
    `cond` describes (see ddpm_ms.sampling.model_call.denoise)."""
    if not terms:
        return x, denoise(forward, x, t_vec, *cond)
    ab = scheduler.alpha_bar(t)
    a, s = ms.Tensor(np.sqrt(ab), ms.float32), ms.Tensor(np.sqrt(1.0 - ab), ms.float32)
    via_model = [term for term in terms if through_model or term.through_model]
    via_x0 = [term for term in terms if term not in via_model]
    moved = x
    if via_model:
        cond = tuple(c if isinstance(c, ms.Tensor) else ms.Tensor(c, ms.float32) for c in cond)
        call = ("unconditional", "conditional", "guided", "rescaled")[len(cond)]
        move = move_through_model(model, via_model, scheduler.prediction_type, call, jit)
        moved, model_output = move(x, t_vec, a, s, *_scales_and_contexts(via_model), *cond)
    else:
        model_output = denoise(forward, x, t_vec, *cond)
    if via_x0:
        move = move_through_x0(via_x0, scheduler.prediction_type, jit)
        moved = move(moved, model_output, a, s, *_scales_and_contexts(via_x0))
    return moved, model_output


def _scales_and_contexts(terms):
    scales = ms.Tensor(np.array([term.scale for term in terms], np.float32))
    return scales, ms.mutable(tuple(term.context for term in terms))  # values, not constants: no recompiling


def sample_many(model, scheduler, num, image_shape, batch_size=64, num_inference_steps=None, seed=0,
                trajectory_every=None, jit=True, progress=True, class_labels=None, guidance_scale=1.0,
                guidance_rescale=0.0, guidance_interval=None, x_T=None, loss_guidance=None,
                guidance_through_model=False, image=None, strength=1.0, mask=None, jump_length=1, jump_n_sample=1):
    """`num` images of `image_shape` (C, H, W) in batches of at most `batch_size`; batch b uses
    noise stream b of `seed` (for the starting noise too, unless `x_T`, (num, C, H, W), gives it).
    class_labels: one int or one per image; guidance, loss guidance, image and mask: see `sample`
    (an image or mask is one for all images or one per image).
    Returns (images (num, C, H, W), trajectory of the first batch)."""
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be positive, got {num} and {batch_size}")
    if x_T is not None and tuple(np.shape(x_T)) != (num, *image_shape):
        raise ValueError(f"the starting noise has shape {tuple(np.shape(x_T))}, expected {(num, *image_shape)}")
    image = batch_images(image, num, image_shape, "image")
    mask = batch_images(mask, num, image_shape, "mask")
    images, trajectory = [], []
    labels = class_label_array(model, class_labels, num)
    sizes = [min(batch_size, num - start) for start in range(0, num, batch_size)]
    bar = tqdm(total=num, desc="images", unit="img", disable=not progress or len(sizes) == 1)
    for b, size in enumerate(sizes):
        part = slice(b * batch_size, b * batch_size + size)
        batch, traj = sample(model, scheduler, (size, *image_shape), num_inference_steps, seed=seed,
                             trajectory_every=trajectory_every if b == 0 else None, jit=jit, progress=progress,
                             stream=b, class_labels=None if labels is None else labels[part],
                             guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                             guidance_interval=guidance_interval,
                             x_T=None if x_T is None else np.asarray(x_T[part], np.float32),
                             loss_guidance=loss_guidance, guidance_through_model=guidance_through_model,
                             image=None if image is None else image[part], strength=strength,
                             mask=None if mask is None else mask[part], jump_length=jump_length,
                             jump_n_sample=jump_n_sample)
        images.append(batch)
        trajectory = trajectory or traj
        bar.update(size)
    bar.close()
    return np.concatenate(images), trajectory
