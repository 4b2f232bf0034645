"""The sampling loop shared by every scheduler and task: noise in, images (and a trajectory) out.

`sample` draws images in batches; `sample_batch` is the loop over one batch. Per step the loop
calls the model once (`StepModel`: classifier-free guidance and loss guidance, as the pieces given
ask) and the scheduler's `step` once; the image tensors never leave the device until the end. An
edit (ddpm_ms/sampling/editing.py) changes where the chain starts (image-to-image) and what it keeps
(inpainting). Noise comes from one seeded MindSpore `StandardNormal` generator per batch, so the
same seed gives the same images on the same device.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm.auto import tqdm

from ddpm_ms.sampling.editing import img2img_start, repaint_path
from ddpm_ms.sampling.loss_guidance import NO_X0_GRADIENT, LossGuidance, move_through_model, move_through_x0
from ddpm_ms.sampling.model_call import ClassifierFreeGuidance, denoise

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


def split_guidance(guidance) -> tuple[ClassifierFreeGuidance | None, list[LossGuidance]]:
    """The sampling call's `guidance` (None, one piece or several; None pieces are skipped) as
    (its ClassifierFreeGuidance or None, its LossGuidance terms)."""
    pieces = [guidance] if isinstance(guidance, (ClassifierFreeGuidance, LossGuidance)) else list(guidance or ())
    pieces = [piece for piece in pieces if piece is not None]
    for piece in pieces:
        if not isinstance(piece, (ClassifierFreeGuidance, LossGuidance)):
            raise TypeError(f"guidance takes ClassifierFreeGuidance and LossGuidance pieces (ColorGuidance, "
                            f"TextGuidance, ...), got {piece!r}")
    cfg = [piece for piece in pieces if isinstance(piece, ClassifierFreeGuidance)]
    if len(cfg) > 1:
        raise ValueError(f"guidance takes one ClassifierFreeGuidance, got {len(cfg)}")
    return (cfg[0] if cfg else None), [piece for piece in pieces if isinstance(piece, LossGuidance)]


def sample(model, scheduler, shape, *, seed=0, batch_size=None, class_labels=None, guidance=None, edit=None, x_T=None,
           trajectory_every=None, jit=True, progress=True):
    """`shape` (num, C, H, W): num images drawn with `scheduler` (DDPM, DDIM or DPM-Solver++) on its
    current grid (call its `set_timesteps` first), in batches of at most `batch_size` (None: one batch).
    Batch b uses noise stream b of `seed` (see `noise_generator`), for the starting noise too unless
    `x_T` (num, C, H, W) gives it.
    class_labels: for a class-conditional model, one int or one per image (None: "no class", the
    unconditional model). guidance: ClassifierFreeGuidance and LossGuidance pieces (ColorGuidance,
    TextGuidance, ...; one, a list, or None). edit: an Img2Img or Inpaint (ddpm_ms.sampling.editing),
    its image and mask one for all images or one per image. trajectory_every: also return Frames of the
    first batch every k steps (see `sample_batch`).
    Returns (images as a float32 NumPy array of `shape`, trajectory)."""
    num, image_shape = int(shape[0]), tuple(int(s) for s in shape[1:])
    batch_size = num if batch_size is None else batch_size
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be positive, got {num} and {batch_size}")
    if x_T is not None and tuple(np.shape(x_T)) != (num, *image_shape):
        raise ValueError(f"the starting noise has shape {tuple(np.shape(x_T))}, expected {(num, *image_shape)}")
    labels = class_label_array(model, class_labels, num)
    edit = None if edit is None else edit.batched(num, image_shape)
    images, trajectory = [], []
    starts = range(0, num, batch_size)
    bar = tqdm(total=num, desc="images", unit="img", disable=not progress or len(starts) == 1)
    for b, start in enumerate(starts):
        rows = slice(start, min(start + batch_size, num))
        normal = noise_generator(seed, b)
        x = normal((rows.stop - start, *image_shape)) if x_T is None else np.asarray(x_T[rows], np.float32)
        batch, frames = sample_batch(model, scheduler, x, normal, None if labels is None else labels[rows], guidance,
                                     None if edit is None else edit[rows], trajectory_every if b == 0 else None,
                                     jit, progress)
        images.append(batch)
        trajectory = trajectory or frames
        bar.update(len(batch))
    bar.close()
    return np.concatenate(images), trajectory


def sample_batch(model, scheduler, x, normal, class_labels=None, guidance=None, edit=None, trajectory_every=None,
                 jit=True, progress=True):
    """Denoise one batch from the noise `x` (a tensor or array (N, C, H, W)) with `scheduler` on its
    current grid; `normal` (a `noise_generator`) draws the noise of stochastic steps and inpainting.
    class_labels, guidance and edit: as for `sample`, for these N images. trajectory_every: also return
    a Frame every k steps, from the noise the chain starts from to the final images (empty when None).
    Returns (images as a float32 NumPy array, trajectory)."""
    if trajectory_every is not None and int(trajectory_every) < 1:
        raise ValueError(f"trajectory_every must be a positive integer, got {trajectory_every}")
    x = x if isinstance(x, ms.Tensor) else ms.Tensor(np.asarray(x, np.float32))
    shape = tuple(x.shape)
    model_output_at = StepModel(model, scheduler, class_label_array(model, class_labels, shape[0]), guidance, jit)
    image = keep = None
    if edit is not None:
        edit = edit.batched(shape[0], shape[1:])
        image = ms.Tensor(edit.image)
        if edit.mask is not None:  # the pixels to keep, True where the mask is 0
            keep = ms.Tensor(np.ascontiguousarray(np.broadcast_to(edit.mask < 0.5, shape)))
        if keep is not None and edit.jump_n_sample > 1 and scheduler.multistep:
            raise ValueError(f"resampling jumps (jump_n_sample > 1) step back, and {type(scheduler).__name__} builds "
                             "each step on the previous ones: inpaint with jumps using the ddpm or ddim sampler")
    scheduler.reset()
    full_grid = scheduler.timesteps
    if image is not None:
        skip = img2img_start(len(full_grid), edit.strength)
        if skip == len(full_grid):  # strength 0: nothing to denoise
            done = image.asnumpy()
            return done, [Frame(0, done, None)] if trajectory_every else []
        if skip:  # SDEdit: start from the image noised to the first remaining timestep (the grid is put back after)
            scheduler.set_timesteps(timesteps=full_grid[skip:])
            x = scheduler.add_noise(image, x, np.full(shape[0], scheduler.timesteps[0]))
    steps = scheduler.timesteps
    path = repaint_path(len(steps), edit.jump_length, edit.jump_n_sample) if keep is not None else range(len(steps) + 1)
    timestep = [int(t) for t in steps] + [-1]  # the timestep of each grid position; -1: the clean image
    kept = [(timestep[0] + 1, x, None)] if trajectory_every else []  # the noise the chain starts from
    was_training = model.training
    model.set_train(False)
    try:
        for k in tqdm(range(1, len(path)), desc="sampling", disable=not progress, leave=False):
            t, prev = timestep[path[k - 1]], timestep[path[k]]
            if path[k] < path[k - 1]:  # a RePaint jump: one step back up by the forward process
                x, x0 = _renoise(scheduler, x, t, prev, normal(shape)), None
            else:
                x, model_output = model_output_at(x, t)
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
        if scheduler.timesteps is not full_grid:
            scheduler.set_timesteps(timesteps=full_grid)
    trajectory = [Frame(t, s.asnumpy(), None if p is None else p.asnumpy()) for t, s, p in kept]
    return x.asnumpy(), trajectory


def _renoise(scheduler, x, t_from: int, t_to: int, noise):
    """x at timestep t_from (-1: clean) carried forward to the noisier t_to: q(x_to | x_from)."""
    ratio = scheduler.alpha_bar(t_to) / scheduler.alpha_bar(t_from)
    return float(np.sqrt(ratio)) * x + float(np.sqrt(1.0 - ratio)) * noise


class StepModel:
    """The model call of one step for a batch with `labels` (or None): `step_model(x, t)` -> (x, the
    model output), guided where the ClassifierFreeGuidance piece of `guidance` applies (ddpm_ms/sampling/
    model_call.py), with x first moved by the LossGuidance terms that apply (ddpm_ms/sampling/
    loss_guidance.py): those that ask for it through the model, the others through the x0 formula
    with the model output at the unmoved x. An exported MindIR graph (ddpm_ms.pipeline.mindir,
    `guidance_in_graph`) mixes the guided outputs itself and takes the scale only."""

    def __init__(self, model, scheduler, labels, guidance, jit: bool = True):
        self.cfg, terms = split_guidance(guidance)
        self.terms = [term for term in terms if term.scale > 0]
        self.in_graph = getattr(model, "guidance_in_graph", False)
        if self.in_graph and (self.cfg is not None and self.cfg.rescale or self.terms):
            raise ValueError("an exported MindIR denoiser takes the guidance scale only: sample it without "
                             "guidance rescale and loss guidance (or from the pipeline's weights)")
        if any(not term.through_model for term in self.terms) and scheduler.prediction_type == "x0":
            raise ValueError(NO_X0_GRADIENT)
        self.model, self.scheduler, self.jit = model, scheduler, jit
        self.forward = compiled(model) if jit and not self.in_graph else model
        self.y = None if labels is None else ms.Tensor(labels)
        if labels is not None and self.cfg is not None and self.cfg.scale != 1 and not self.in_graph:
            # the labels, then "no class", in one batch of twice the size
            self.y_pair = ms.Tensor(np.concatenate([labels, np.full(len(labels), model.num_classes, np.int32)]))
        self.ones = None

    def __call__(self, x, t: int):
        if self.ones is None:
            self.ones = ops.ones((x.shape[0],), ms.float32)
        t_vec = self.ones * float(t)
        guided = self.y is not None and self.cfg is not None and self.cfg.applies_at(t)
        if self.in_graph:  # the graph mixes the outputs; w = 1 outside the interval
            return x, self.forward(x, t_vec, *(() if self.y is None else (self.y, self.cfg.scale if guided else 1.0)))
        if guided:
            cond = (self.y_pair, self.cfg.scale) + ((self.cfg.rescale,) if self.cfg.rescale else ())
        else:
            cond = () if self.y is None else (self.y,)
        terms = [term for term in self.terms if term.applies_at(t)]
        if not terms:
            return x, denoise(self.forward, x, t_vec, *cond)
        ab = self.scheduler.alpha_bar(t)
        a, s = ms.Tensor(np.sqrt(ab), ms.float32), ms.Tensor(np.sqrt(1.0 - ab), ms.float32)
        via_model = [term for term in terms if term.through_model]
        via_x0 = [term for term in terms if not term.through_model]
        moved = x
        if via_model:
            cond = tuple(c if isinstance(c, ms.Tensor) else ms.Tensor(c, ms.float32) for c in cond)
            call = ("unconditional", "conditional", "guided", "rescaled")[len(cond)]
            move = move_through_model(self.model, via_model, self.scheduler.prediction_type, call, self.jit)
            moved, model_output = move(x, t_vec, a, s, *_scales_and_contexts(via_model), *cond)
        else:
            model_output = denoise(self.forward, x, t_vec, *cond)
        if via_x0:
            move = move_through_x0(via_x0, self.scheduler.prediction_type, self.jit)
            moved = move(moved, model_output, a, s, *_scales_and_contexts(via_x0))
        return moved, model_output


def _scales_and_contexts(terms):
    scales = ms.Tensor(np.array([term.scale for term in terms], np.float32))
    return scales, ms.mutable(tuple(term.context for term in terms))  # values, not constants: no recompiling
