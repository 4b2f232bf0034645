"""Small denoisers of every backbone, for the tests that must hold for each (`ARCHS`)."""
import mindspore as ms
import numpy as np

from ddpm_ms.config import ModelConfig
from ddpm_ms.models import build_model

ARCHS = ("unet", "dit", "ddpm_unet")
TINY = {"unet": dict(dim=8, dim_mults=(1, 2)),
        "dit": dict(arch="dit", patch_size=4, hidden_size=16, depth=1, attn_heads=2),
        "ddpm_unet": dict(arch="ddpm_unet", dim=8, dim_mults=(1, 2), num_res_blocks=1, attn_resolutions=(),
                          resnet_groups=4)}


def tiny_config(arch: str, **fields) -> ModelConfig:
    return ModelConfig(**{**TINY[arch], **fields})


def wake(model, seed: int = 0, std: float = 0.1):
    """Redraw every all-zero weight (DiT's adaLN-Zero regressors and output layer and the DDPM U-Net's
    residual branches and output conv start at zero, so an untrained model predicts 0 whatever its input): the model then answers like a trained one, its
    output depending on x, t and the label."""
    rng = np.random.default_rng(seed)
    for p in model.trainable_params():
        if not p.asnumpy().any():
            p.set_data(ms.Tensor(rng.normal(0.0, std, p.shape).astype(np.float32)))
    return model


def tiny_model(arch: str, seed: int = 0, **fields):
    """A freshly built small model of `arch` (fields override its ModelConfig), woken up."""
    ms.set_seed(seed)
    return wake(build_model(tiny_config(arch, **fields)), seed)
