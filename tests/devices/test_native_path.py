"""The formulation GPU and Ascend run (DDPM_MS_KERNELS=native: MindSpore's own ops, no CPU kernel),
exercised here in graph mode with jit_syntax_level STRICT for every backbone: the compiled train step
trains as the CPU kernels do, and every sampler draws the same images. (What ran where:
docs/devices.md; the primitive audit: scripts/check_ops.py.)"""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.config import DiffusionConfig, SamplingConfig, backbone_config
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import build_model
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.training.step import TrainStep
from tiny_models import ARCHS, TINY, wake

pytestmark = pytest.mark.native


@pytest.fixture
def strict():
    ms.set_context(jit_syntax_level=ms.STRICT)
    yield
    ms.set_context(jit_syntax_level=ms.LAX)


def _pair(arch, monkeypatch, **fields):
    """(native model, model with this machine's default formulation), same weights."""
    cfg = backbone_config(**{**TINY[arch], "image_size": (16, 16), "channels": 1, "num_classes": 3, **fields})
    monkeypatch.setenv("DDPM_MS_KERNELS", "native")
    ms.set_seed(0)
    native = wake(build_model(cfg))
    monkeypatch.delenv("DDPM_MS_KERNELS")
    default = build_model(cfg)
    for a, b in zip(native.get_parameters(), default.get_parameters()):
        b.set_data(a.data.copy())
    kinds = {c.formulation for _, c in native.cells_and_names() if hasattr(c, "formulation")}
    assert kinds <= {"native"}, kinds
    return cfg, native, default


@pytest.mark.parametrize("arch", ARCHS)
def test_native_train_step_compiles_strict_and_trains_as_the_cpu_kernels_do(arch, monkeypatch, strict, rng):
    _, native, default = _pair(arch, monkeypatch)
    x0 = ms.Tensor(rng.standard_normal((4, 1, 16, 16)).astype(np.float32))
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    batches = [(ms.Tensor(rng.integers(0, 100, 4).astype(np.int32)),
                ms.Tensor(rng.standard_normal((4, 1, 16, 16)).astype(np.float32))) for _ in range(3)]
    losses = {}
    for name, net in (("native", native), ("default", default)):
        diffusion = GaussianDiffusion(net, NoiseSchedule(100, "cosine"), "eps", "huber", p2_gamma=0.5)
        step = TrainStep(diffusion, ms.nn.Adam(net.trainable_params(), learning_rate=1e-3), clip_grad=1.0)
        losses[name] = [float(step.update(x0, t, noise, y)[0].asnumpy()) for t, noise in batches]
    np.testing.assert_allclose(losses["native"], losses["default"], rtol=1e-4)
    assert losses["native"][0] != losses["native"][2]  # the updates changed the model
    for a, b in zip(native.trainable_params(), default.trainable_params()):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=2e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_sampler_compiled_strict_draws_what_the_cpu_kernels_draw(arch, monkeypatch, strict):
    cfg, native, default = _pair(arch, monkeypatch)
    diffusion, sampling = DiffusionConfig(timesteps=100), SamplingConfig(guidance_scale=2.0, guidance_interval=(0, 60))
    pipes = [DiffusionPipeline(net, cfg, diffusion, sampling) for net in (native, default)]
    for sampler in ("ddpm", "ddim", "dpm++", "dpm++sde"):
        a, b = (pipe(4, sampler=sampler, num_inference_steps=6, seed=1, progress=False).images for pipe in pipes)
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=sampler)
