"""Loss guidance: steer sampling with the gradient of a differentiable loss on the predicted clean image.

A guidance term is any function `loss(pred_x0, context) -> scalar` with a scale (the Hugging Face
diffusion course, unit 2; Bansal et al. 2023, "Universal guidance"). At each guided step, before the
scheduler's step, the sampling loop moves the noisy sample downhill:

    x_t <- x_t - scale * sqrt(alpha-bar_t) * d loss(x0_hat(x_t)) / d x_t

and the scheduler then steps from the moved x_t with the model output it already has. Two ways to
differentiate, as in the course:
  (a) through the x0 formula only (`through_model=False`): the model output is held fixed, so the
      gradient costs no model call; for an eps model x0_hat = (x_t - sqrt(1-ab) eps) / sqrt(ab) and the
      move is scale * d loss / d x0_hat, the same size at every noise level;
  (b) through the denoiser too (`through_model=True`): x0_hat's dependence on x_t through the model is
      kept, which costs a backward pass but stays closer to images the model knows.
The sqrt(alpha-bar_t) factor is the course's CLIP loop's; without it (a) would move x_t by
1/sqrt(alpha-bar) times the x0 gradient, 70x at DPM-Solver++'s first step on the cosine schedule.
Losses see the unclamped x0 estimate: a clamp has zero gradient wherever it clips, which at high
noise is almost everywhere. Per-step coefficients enter the compiled gradient as tensors, so
changing the scale or the step does not recompile it.

A loss should add up one value per image (as ColorGuidance and TextGuidance do), so an image's push
does not depend on how many images share its batch.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import mindspore as ms
import numpy as np
from mindspore import ops

from ddpm_ms.config import check_guidance_interval
from ddpm_ms.sampling.base import x0_estimate
from ddpm_ms.sampling.model_call import denoise

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: a colour's brightness for one-channel models


class LossGuidance:
    """One guidance term. loss: `loss(pred_x0, context) -> scalar tensor`, pred_x0 being the (N, C, H, W)
    x0 estimate in [-1, 1] units (a def'd function or an nn.Cell that ms.jit can compile: MindSpore
    cannot parse a lambda written inside a call); context: a tensor (or a
    tuple of tensors) handed to it, such as a target colour or a text embedding; scale >= 0 (0: off);
    interval (lo, hi): guide only at timesteps lo <= t <= hi (None: every step); through_model: take
    this term's gradient through the denoiser (variant (b)) instead of through the x0 formula (a).
    Terms are pieces of the sampling call's `guidance`, beside ClassifierFreeGuidance."""

    def __init__(self, loss: Callable, scale: float = 1.0, context=None, interval=None, name: str | None = None,
                 through_model: bool = False):
        if not callable(loss):
            raise TypeError(f"loss must be a function loss(pred_x0, context) -> scalar, got {loss!r}")
        scale = float(scale)
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"the guidance scale must be a finite number >= 0 (0: off), got {scale}")
        self.loss, self.scale, self.through_model = loss, scale, bool(through_model)
        self.context = _as_tensors(context)
        self.interval = check_guidance_interval(interval)
        self.name = name or getattr(loss, "__name__", type(loss).__name__)

    def applies_at(self, t: int) -> bool:
        """Whether this term guides the step from timestep t."""
        return self.scale > 0 and (self.interval is None or self.interval[0] <= t <= self.interval[1])

    def __repr__(self) -> str:
        where = "" if self.interval is None else f", interval={self.interval}"
        return f"{type(self).__name__}({self.name}, scale={self.scale:g}{where})"


def _as_tensors(context):
    if context is None:
        return ms.Tensor(np.zeros((), np.float32))  # the loss ignores it; jit needs a tensor
    if isinstance(context, (tuple, list)):
        return tuple(_as_tensors(c) for c in context)
    return context if isinstance(context, ms.Tensor) else ms.Tensor(np.asarray(context, np.float32))


# -- colour ------------------------------------------------------------------------------------
def color_loss(pred_x0, target):
    """Each image's mean absolute distance to the colour `target` (3 values in [-1, 1]), added over the
    batch: the course's colour loss, per image. A one-channel image is compared with the colour's
    brightness (BT.601 luma)."""
    channels = pred_x0.shape[1]
    if channels == 3:
        goal = target.reshape(1, 3, 1, 1)
    elif channels == 1:
        goal = (LUMA[0] * target[0] + LUMA[1] * target[1] + LUMA[2] * target[2]).reshape(1, 1, 1, 1)
    else:
        raise ValueError(f"colour guidance needs 1- or 3-channel images, got {channels} channels")
    return ops.abs(pred_x0 - goal).mean(axis=(1, 2, 3)).sum()


def parse_color(value) -> tuple[float, float, float]:
    """A colour as three floats in [0, 1], from "R,G,B" (0-255 each, or 0-1 floats if all are <= 1 and one
    has a decimal point), "#rrggbb", "rgb(r, g, b)" / "rgba(r, g, b, a)" (Gradio's colour picker) or a
    sequence of three numbers in [0, 1]."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("#") and len(text) in (4, 7):
            digits = text[1:] if len(text) == 7 else "".join(c * 2 for c in text[1:])
            try:
                return tuple(int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4))
            except ValueError:
                pass
        else:
            inner = text[text.find("(") + 1:text.rfind(")")] if text.startswith(("rgb(", "rgba(")) else text
            parts = [p.strip() for p in inner.split(",")]
            try:
                numbers = [float(p) for p in parts[:3]]
            except ValueError:
                numbers = []
            if len(parts) in (3, 4) and len(numbers) == 3 and all(0 <= v <= 255 for v in numbers):
                floats = any("." in p for p in parts[:3]) and all(v <= 1 for v in numbers)
                return tuple(v if floats else v / 255 for v in numbers)
        raise ValueError(f"colour {value!r} is not R,G,B (0-255 each), #rrggbb or rgb(r, g, b)")
    rgb = tuple(float(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
        raise ValueError(f"a colour is three numbers in [0, 1], got {value!r}")
    return rgb


class ColorGuidance(LossGuidance):
    """Push the images toward a colour: rgb as three numbers in [0, 1] (or any form `parse_color`
    reads). On a one-channel model it is a brightness target. through_model: take the gradient
    through the denoiser too (variant (b): slower, stays closer to the data)."""

    def __init__(self, rgb, scale: float = 1.0, interval=None, through_model: bool = False):
        self.rgb = parse_color(rgb)
        super().__init__(color_loss, scale, context=np.array(self.rgb, np.float32) * 2 - 1, interval=interval,
                         name="colour " + "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in self.rgb)),
                         through_model=through_model)


# -- the guided move ---------------------------------------------------------------------------
NO_X0_GRADIENT = ("guidance through the x0 formula has no gradient for a model that predicts x0 itself (x0_hat "
                  "does not depend on x_t): guide through the model (through_model=True)")


def _total_loss(losses, pred_x0, scales, contexts):
    total = scales[0] * losses[0](pred_x0, contexts[0])
    for k in range(1, len(losses)):
        total = total + scales[k] * losses[k](pred_x0, contexts[k])
    return total


_MOVES = {}


def _cached(key, keep, build):
    """A compiled move per configuration (the model, the losses, the kind of model call), kept while the
    objects it was built for live: a new ms.jit function would compile again."""
    hit = _MOVES.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], keep)):
        hit = _MOVES[key] = (keep, build())
    return hit[1]


def move_through_x0(terms: Sequence[LossGuidance], prediction_type: str, jit: bool = True):
    """Variant (a): fn(x, model_output, a, s, scales, contexts) -> x moved by the scaled loss gradient,
    the model output held fixed."""
    if prediction_type == "x0":
        raise ValueError(NO_X0_GRADIENT)
    losses = tuple(term.loss for term in terms)

    def build():
        def objective(x, model_output, a, s, scales, contexts):
            return _total_loss(losses, x0_estimate(model_output, x, a, s, prediction_type), scales, contexts)

        gradient = ms.grad(objective, grad_position=0)

        def move(x, model_output, a, s, scales, contexts):
            return x - a * gradient(x, model_output, a, s, scales, contexts)
        return ms.jit(move) if jit else move

    return _cached(("x0", prediction_type, tuple(map(id, losses)), jit), losses, build)


def move_through_model(model, terms: Sequence[LossGuidance], prediction_type: str, call: str, jit: bool = True):
    """Variant (b): fn(x, t, a, s, scales, contexts, *cond) -> (x moved, the model output at the unmoved x);
    the gradient runs back through the denoiser. call: "unconditional" (cond = ()), "conditional"
    (cond = (y,)), "guided" ((y_pair, w)) or "rescaled" ((y_pair, w, phi)): see `denoise`."""
    losses = tuple(term.loss for term in terms)

    def build():
        def objective(x, t, a, s, scales, contexts, *cond):
            model_output = denoise(model, x, t, *cond)
            pred_x0 = x0_estimate(model_output, x, a, s, prediction_type)
            return _total_loss(losses, pred_x0, scales, contexts), model_output

        value_and_gradient = ms.value_and_grad(objective, grad_position=0, has_aux=True)

        def move(x, t, a, s, scales, contexts, *cond):
            (_, model_output), grad = value_and_gradient(x, t, a, s, scales, contexts, *cond)
            return x - a * grad, model_output
        return ms.jit(move) if jit else move

    return _cached(("model", id(model), prediction_type, call, tuple(map(id, losses)), jit), (model, *losses), build)

