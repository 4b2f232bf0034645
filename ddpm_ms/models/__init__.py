"""Denoisers: pure `nn.Cell`s, images and timesteps (and labels) in, a tensor of the image's shape out.
Each backbone registers itself in ddpm_ms.registry.BACKBONES with its config class;
`build_model(model_config)` builds the one a config names, and every caller goes through it."""
# The order of these imports is the order the backbones register in, and so the order menus list them.
from ddpm_ms.models.unet import UNet, UNetConfig, count_parameters  # isort: skip
from ddpm_ms.models.dit import DiT, DiTConfig  # isort: skip
from ddpm_ms.models.ddpm_unet import DDPMUNet, DDPMUNetConfig  # isort: skip
from ddpm_ms.models.layers import Conv2d
from ddpm_ms.registry import BACKBONES


def build_model(model_config):
    """The denoiser `model_config` describes (`model_config.arch` picks the backbone), freshly initialised."""
    model_config.validate()
    return BACKBONES[model_config.arch].model(model_config)


__all__ = ["Conv2d", "DDPMUNet", "DDPMUNetConfig", "DiT", "DiTConfig", "UNet", "UNetConfig", "build_model",
           "count_parameters"]
