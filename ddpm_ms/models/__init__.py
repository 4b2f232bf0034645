"""Denoisers: pure `nn.Cell`s, images and timesteps (and labels) in, a tensor of the image's shape out.
`build_model(model_config)` builds the backbone a config names; every caller goes through it."""
from ddpm_ms.models.ddpm_unet import DDPMUNet
from ddpm_ms.models.dit import DiT
from ddpm_ms.models.layers import Conv2d
from ddpm_ms.models.unet import UNet, count_parameters

BACKBONES = {"unet": UNet, "dit": DiT, "ddpm_unet": DDPMUNet}  # ModelConfig.arch -> the Cell it builds (config.ARCHS lists the same names)


def build_model(model_config):
    """The denoiser `model_config` describes (`model_config.arch` picks the backbone), freshly initialised."""
    model_config.validate()
    if model_config.arch not in BACKBONES:
        raise ValueError(f"model.arch {model_config.arch!r} has no backbone; choose one of {sorted(BACKBONES)}")
    return BACKBONES[model_config.arch](model_config)


__all__ = ["BACKBONES", "Conv2d", "DDPMUNet", "DiT", "UNet", "build_model", "count_parameters"]
