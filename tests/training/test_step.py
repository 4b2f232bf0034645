"""Gradient accumulation equals one larger batch; the loss scaler leaves updates unchanged and
skips the ones whose gradients overflow."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.config import DiffusionConfig
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
from ddpm_ms.training.step import TrainStep
from training_toy import ToyLoss


def unet_step(grad_accum):
    ms.set_seed(0)
    model = UNet(UNetConfig(image_size=(16, 16), dim=8, dim_mults=(1, 2)))
    diffusion = GaussianDiffusion(model, NoiseSchedule.from_config(DiffusionConfig(timesteps=100)), "eps", "huber",
                                  0.5, 1.0)
    opt = build_optimizer(model.trainable_params(), WarmupSchedule(2e-3, "cosine", 1, 3), "adamw", 0.01)
    return model, TrainStep(diffusion, opt, grad_accum=grad_accum, clip_grad=0.05, weight_decay=0.01)


@pytest.mark.slow
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(rng):
    k, micro, updates = 3, 4, 3
    x0 = rng.uniform(-1, 1, (updates, k * micro, 1, 16, 16)).astype(np.float32)
    t = rng.integers(0, 100, (updates, k * micro)).astype(np.int32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    big_model, big = unet_step(1)
    acc_model, acc = unet_step(k)
    for u in range(updates):
        big_loss, big_norm, _, _ = big.update(ms.Tensor(x0[u]), ms.Tensor(t[u]), ms.Tensor(noise[u]))
        losses = []
        for i in range(k):
            s = slice(i * micro, (i + 1) * micro)
            args = ms.Tensor(x0[u, s]), ms.Tensor(t[u, s]), ms.Tensor(noise[u, s])
            if i < k - 1:
                losses.append(float(acc.micro(*args).asnumpy()))
            else:
                loss, norm, _, _ = acc.update(*args)
                losses.append(float(loss.asnumpy()))
        assert np.mean(losses) == pytest.approx(float(big_loss.asnumpy()), rel=1e-5)
        assert float(norm.asnumpy()) == pytest.approx(float(big_norm.asnumpy()), rel=1e-5)
        assert float(big_norm.asnumpy()) > 0.05, "clipping is active, so the accumulated norm must be right"
    big_w = dict(big_model.parameters_and_names())
    diffs = [np.abs(p.asnumpy() - big_w[n].asnumpy()).max() for n, p in acc_model.parameters_and_names()]
    moved = [np.abs(p.asnumpy()).max() for p in acc_model.get_parameters()]
    assert max(diffs) < 2e-6, f"accumulated and large-batch weights differ by {max(diffs)}"
    assert max(moved) > 0.1
    assert all(float(np.abs(a.asnumpy()).max()) == 0.0 for a in acc.accum), "accumulators are zeroed after an update"


def _toy_step(scale=None, w=(0.5, -0.3, 0.2, 0.1), b=(0.0, 0.1, -0.1, 0.2), **kw):
    toy = ToyLoss(w, b)
    opt = build_optimizer([toy.w, toy.b], WarmupSchedule(0.01), "adam")
    scaler = ms.amp.DynamicLossScaler(scale_value=scale, scale_factor=2, scale_window=1000) if scale else None
    return toy, opt, scaler, TrainStep(toy, opt, loss_scaler=scaler, **kw)


def test_loss_scaling_leaves_the_update_unchanged(rng):
    x0 = ms.Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    noise = ms.Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    t = ms.Tensor(np.zeros(8, np.int32))
    plain, _, _, plain_step = _toy_step()
    scaled, _, scaler, scaled_step = _toy_step(scale=2.0 ** 12)
    for _ in range(3):
        l1, n1, _, _ = plain_step.update(x0, t, noise)
        l2, n2, _, f2 = scaled_step.update(x0, t, noise)
        assert float(l2.asnumpy()) == pytest.approx(float(l1.asnumpy()), rel=1e-6), "the logged loss is unscaled"
        assert float(n2.asnumpy()) == pytest.approx(float(n1.asnumpy()), rel=1e-5)
        assert bool(f2.asnumpy())
    np.testing.assert_allclose(scaled.w.asnumpy(), plain.w.asnumpy(), rtol=1e-6)
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 12


def test_overflowing_gradients_skip_the_update_and_shrink_the_scale(rng):
    toy, opt, scaler, step = _toy_step(scale=2.0 ** 120, w=np.zeros(4), b=np.zeros(4))
    # Residuals of 1 (loss 1) on inputs of 1e4 give gradients 5e3 times the loss: the scaled
    # loss (1.3e36) is finite, its gradients (6.6e39) overflow float32.
    x0 = ms.Tensor(np.full((8, 4), 1e4, np.float32))
    noise = ms.Tensor(np.ones((8, 4), np.float32))
    t = ms.Tensor(np.zeros(8, np.int32))
    w_before, steps_before = toy.w.asnumpy().copy(), int(opt.global_step.asnumpy().reshape(-1)[0])
    loss, norm, _, finite = step.update(x0, t, noise)
    assert np.isfinite(float(loss.asnumpy()))
    assert not bool(finite.asnumpy())
    np.testing.assert_array_equal(toy.w.asnumpy(), w_before)
    assert int(opt.global_step.asnumpy().reshape(-1)[0]) == steps_before, "the optimizer did not step"
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 119
    # With ordinary inputs the next update goes through at the reduced scale.
    _, _, _, finite = step.update(ms.Tensor(rng.standard_normal((8, 4)).astype(np.float32)), t, noise)
    assert bool(finite.asnumpy()) and not np.array_equal(toy.w.asnumpy(), w_before)


def test_bad_settings_are_refused():
    toy = ToyLoss([0.0], [0.0])
    opt = build_optimizer([toy.w, toy.b], WarmupSchedule(0.01), "adam")
    with pytest.raises(ValueError, match="grad_accum must be >= 1"):
        TrainStep(toy, opt, grad_accum=0)
    with pytest.raises(ValueError, match="clip_grad must be positive"):
        TrainStep(toy, opt, clip_grad=0.0)
