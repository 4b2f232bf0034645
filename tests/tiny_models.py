"""Small denoisers of every registered backbone (each entry's `tiny` fields), for the tests that must
hold for each (`ARCHS`)."""
import mindspore as ms
import numpy as np

from ddpm_ms.config import backbone_config
from ddpm_ms.models import build_model
from ddpm_ms.registry import BACKBONES

ARCHS = BACKBONES.names()
TINY = {arch: {"arch": arch, **BACKBONES[arch].tiny} for arch in ARCHS}


def tiny_config(arch: str, **fields):
    return backbone_config(**{**TINY[arch], **fields})


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
    """A freshly built small model of `arch` (fields override its config), woken up."""
    ms.set_seed(seed)
    return wake(build_model(tiny_config(arch, **fields)), seed)


def assert_learns(diffusion, rng, updates: int = 60):
    """A few dozen compiled updates on one batch of 16 binary 8x8 images of 2 classes lower the loss
    measured at fixed timesteps and noise to below 70% of where it started."""
    from ddpm_ms.training.step import TrainStep

    x0 = ms.Tensor(np.where(rng.random((16, 1, 8, 8)) < 0.5, -1.0, 1.0).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 2, 16).astype(np.int32))
    t_fixed = ms.Tensor(rng.integers(0, 100, 16).astype(np.int32))
    noise_fixed = ms.Tensor(rng.standard_normal((16, 1, 8, 8)).astype(np.float32))

    def held_out_loss():
        return float(diffusion(x0, t_fixed, noise_fixed, y).asnumpy())

    before = held_out_loss()
    net = diffusion.model
    step = TrainStep(diffusion, ms.nn.Adam(net.trainable_params(), learning_rate=3e-3), clip_grad=1.0)
    for _ in range(updates):
        t = ms.Tensor(rng.integers(0, 100, 16).astype(np.int32))
        step.update(x0, t, ms.Tensor(rng.standard_normal((16, 1, 8, 8)).astype(np.float32)), y)
    assert held_out_loss() < 0.7 * before, (before, held_out_loss())
