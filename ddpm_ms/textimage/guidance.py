"""TextGuidance: steer sampling toward a text prompt, scored by a text-image model.

The loss is the course's CLIP loss (Hugging Face diffusion course, unit 2): the squared great-circle
distance between the image's and the prompt's unit embeddings, 2 arcsin(|u - v| / 2)^2, per image,
added over the batch. Any encoder pair works: ddpm_ms's own TextImageModel (the default), or a real
CLIP ported to MindSpore, given as an object with `image` (an nn.Cell: images in [-1, 1] -> embeddings,
doing its own resizing and normalisation) and `embed_text(list of str) -> (N, D) tensor`.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ddpm_ms.sampling.loss_guidance import LUMA, LossGuidance


class SphericalDistanceLoss(nn.Cell):
    """loss(pred_x0, text_embedding): sum over images of 2 arcsin(|u - v| / 2)^2, u the image's unit
    embedding (of the x0 estimate clamped to [-1, 1], as the encoder was trained), v the prompt's.
    Colour images meet a grey encoder as their brightness."""

    def __init__(self, image_encoder: nn.Cell, channels: int | None = None):
        super().__init__()
        self.image_encoder, self.channels = image_encoder, channels

    def construct(self, pred_x0, text_embedding):
        x = ops.clamp(pred_x0, -1.0, 1.0)
        if self.channels == 1 and x.shape[1] == 3:
            x = LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]
        u = self.image_encoder(x)
        u = u / ops.sqrt((u * u).sum(axis=-1, keepdims=True) + 1e-12)
        half_chord = ops.clamp(ops.sqrt(((u - text_embedding) ** 2).sum(axis=-1) + 1e-12) / 2, 0.0, 1.0 - 1e-6)
        return (2 * ops.asin(half_chord) ** 2).sum()


class TextGuidance(LossGuidance):
    """Push the images toward `prompt`. encoders: a TextImageModel (ddpm_ms.textimage.load_text_image_model)
    or any object with `image` and `embed_text` (see above); scale and interval as for any LossGuidance.

    Its gradient goes through the denoiser by default (through_model=True): through the x0 formula
    alone, a small image encoder's gradient writes high-contrast patterns into the image that fool it
    (and the FID classifier) without drawing the class (docs/experiments/loss_guidance.md)."""

    def __init__(self, prompt: str, encoders, scale: float = 1.0, interval=None, through_model: bool = True):
        if not hasattr(encoders, "image") or not hasattr(encoders, "embed_text"):
            raise TypeError("encoders must have an `image` encoder (nn.Cell) and an `embed_text(texts)` method, such "
                            "as ddpm_ms.textimage.load_text_image_model()")
        self.prompt = str(prompt)
        text = encoders.embed_text([self.prompt])
        text = text / ops.sqrt((text * text).sum(axis=-1, keepdims=True))
        channels = getattr(getattr(encoders, "config", None), "channels", None)
        encoders.image.set_train(False)
        super().__init__(_loss_for(encoders.image, channels), scale, context=ms.Tensor(text.asnumpy()),
                         interval=interval, name=f"prompt {self.prompt!r}", through_model=through_model)


_LOSSES = {}


def _loss_for(image_encoder, channels):
    """One loss Cell per image encoder, so that prompts share its compiled gradient."""
    key = (id(image_encoder), channels)
    if key not in _LOSSES or _LOSSES[key].image_encoder is not image_encoder:
        _LOSSES[key] = SphericalDistanceLoss(image_encoder, channels)
    return _LOSSES[key]
