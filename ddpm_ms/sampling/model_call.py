"""The model call of one sampling step: unconditional, conditional, or with classifier-free guidance.

Classifier-free guidance (Ho & Salimans 2022) runs the batch twice in one call, with the labels and
with "no class", and mixes the outputs: out = out_uncond + w (out_cond - out_uncond). Large w
over-exposes the images; guidance_rescale phi (Lin et al. 2024, sec. 3.4, diffusers'
`guidance_rescale`) scales each image's guided output to the standard deviation of its conditional
one and blends: out = phi out_rescaled + (1 - phi) out. The sampling loop and loss guidance's
gradient through the model (ddpm_ms.sampling.loss_guidance) both call the model through `denoise`,
so they guide alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from mindspore import ops

from ddpm_ms.config import check_guidance_interval


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance as a piece the sampling loop is given: weight `scale` w (1: the
    conditional model alone, 0: the unconditional one), `rescale` phi in [0, 1] against over-exposure
    (0: off), and `interval` (lo, hi): guide only at timesteps lo <= t <= hi, the conditional model
    alone elsewhere (None: every step). Guidance at high noise pulls every image of a class toward the
    same layout and costs variety, at low noise it does little, and the steps outside the interval
    cost half as much (Kynkaenniemi et al. 2024, "Applying guidance in a limited interval")."""
    scale: float
    rescale: float = 0.0
    interval: tuple | None = None

    def __post_init__(self):
        if not self.scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0 (1: no guidance), got {self.scale}")
        if not 0 <= self.rescale <= 1:
            raise ValueError(f"guidance_rescale must be in [0, 1] (0: off), got {self.rescale}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "rescale", float(self.rescale))
        object.__setattr__(self, "interval", check_guidance_interval(self.interval))

    def applies_at(self, t: int) -> bool:
        """Whether the step from timestep t is guided (never when scale is 1)."""
        return self.scale != 1 and (self.interval is None or self.interval[0] <= t <= self.interval[1])


def rescale_guidance(guided, cond, phi):
    """Lin et al. 2024's fix for over-exposure under strong guidance: `guided` rescaled per image to
    the standard deviation of `cond`, blended with weight phi (0: unchanged, 1: fully rescaled)."""
    axes = tuple(range(1, guided.ndim))
    rescaled = guided * (cond.std(axis=axes, keepdims=True) / guided.std(axis=axes, keepdims=True))
    return phi * rescaled + (1.0 - phi) * guided


def denoise(model, x, t, y=None, w=None, phi=None):
    """The model output at x_t for timesteps t (one per image): unconditional (no y), conditional on
    labels y, or guided with weight w when y holds the labels and then "no class" (2N labels),
    rescaled by phi when given."""
    if y is None:
        return model(x, t)
    if w is None:
        return model(x, t, y)
    cond, uncond = ops.split(model(ops.cat((x, x)), ops.cat((t, t)), y), x.shape[0])
    out = uncond + w * (cond - uncond)
    return out if phi is None else rescale_guidance(out, cond, phi)
