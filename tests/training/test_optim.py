"""Learning-rate schedules in the graph against their formulas, and the compiled update
(Adam, AdamW, clipping, schedule) against a NumPy reference of the same arithmetic."""
import math

import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.training.optim import WarmupSchedule, build_optimizer, decoupled_decay
from ddpm_ms.training.step import TrainStep
from training_toy import ToyLoss, adam_reference


def graph_lr(schedule, step):
    return float(schedule(ms.Tensor(step, ms.int32)).asnumpy())


@pytest.mark.parametrize("kind", ["constant", "cosine", "warmup-constant"])
def test_schedule_in_the_graph_equals_the_host_formula(kind):
    s = WarmupSchedule(2e-3, kind, warmup_steps=10, total_steps=100)
    for step in (0, 4, 9, 10, 37, 55, 99, 150):
        assert graph_lr(s, step) == pytest.approx(s.at(step), rel=1e-5, abs=1e-10)


def test_schedule_shapes():
    cos = WarmupSchedule(1e-3, "cosine", warmup_steps=10, total_steps=110)
    assert cos.at(0) == pytest.approx(1e-4)            # warm-up: (s + 1) / W of the peak
    assert cos.at(9) == pytest.approx(1e-3)            # end of warm-up: the peak
    assert cos.at(60) == pytest.approx(0.5e-3)         # half-way through the decay: half the peak
    assert cos.at(110) == 0.0 and cos.at(500) == 0.0   # 0 at the horizon and after
    lrs = [cos.at(s) for s in range(9, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "cosine decay never rises"
    wc = WarmupSchedule(1e-3, "warmup-constant", warmup_steps=4, total_steps=50)
    assert [wc.at(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert WarmupSchedule(1e-3, "constant").at(0) == 1e-3
    with pytest.raises(ValueError, match="lr schedule must be one of"):
        WarmupSchedule(1e-3, "step")


def _batches(rng, n=6, batch=8, dim=4):
    return [(rng.standard_normal((batch, dim)).astype(np.float32), rng.standard_normal((batch, dim)).astype(np.float32))
            for _ in range(n)]


@pytest.mark.parametrize("optimizer,weight_decay,clip,kind", [
    ("adam", 0.0, None, "constant"),
    ("adam", 0.1, None, "warmup-constant"),    # L2 added to the gradient
    ("adamw", 0.1, None, "cosine"),            # decoupled decay
    ("adamw", 0.05, 0.3, "cosine"),            # ... with clipping that is active
])
def test_compiled_update_matches_numpy_reference(rng, optimizer, weight_decay, clip, kind):
    w0, b0 = rng.standard_normal(4), rng.standard_normal(4)
    batches = _batches(rng)
    schedule = WarmupSchedule(0.05, kind, warmup_steps=2, total_steps=len(batches))
    toy = ToyLoss(w0, b0)
    opt = build_optimizer([toy.w, toy.b], schedule, optimizer, weight_decay)
    step = TrainStep(toy, opt, clip_grad=clip, weight_decay=decoupled_decay(optimizer, weight_decay))
    t = ms.Tensor(np.zeros(8, np.int32))
    norms, lrs = [], []
    for x0, noise in batches:
        loss, norm, lr, finite = step.update(ms.Tensor(x0), t, ms.Tensor(noise))
        norms.append(float(norm.asnumpy()))
        lrs.append(float(lr.asnumpy()))
        assert bool(finite.asnumpy())
    assert lrs == pytest.approx([schedule.at(s) for s in range(len(batches))], rel=1e-6)
    w, b = adam_reference(w0, b0, batches, lrs, weight_decay, decoupled=optimizer == "adamw", clip=clip)
    np.testing.assert_allclose(toy.w.asnumpy(), w, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(toy.b.asnumpy(), b, rtol=2e-5, atol=2e-6)
    if clip is not None:
        assert max(norms) > clip, "the test must exercise clipping"
    # The logged norm is the one before clipping: recompute the first from NumPy.
    from training_toy import toy_grads
    gw, gb = toy_grads(w0, b0, *batches[0])
    assert norms[0] == pytest.approx(math.sqrt((gw ** 2).sum() + (gb ** 2).sum()), rel=1e-5)


def test_unknown_optimizer_and_negative_decay_are_refused():
    toy = ToyLoss(np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer([toy.w], WarmupSchedule(1e-3), "sgd")
    with pytest.raises(ValueError, match="weight decay must be >= 0"):
        build_optimizer([toy.w], WarmupSchedule(1e-3), "adamw", -1.0)
