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

from mindspore import ops


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
