"""Denoisers: pure `nn.Cell`s, images and timesteps in, a tensor of the image's shape out."""
from ddpm_ms.models.layers import Conv2d
from ddpm_ms.models.unet import UNet, count_parameters

__all__ = ["Conv2d", "UNet", "count_parameters"]
