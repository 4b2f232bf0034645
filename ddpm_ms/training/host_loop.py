"""The host side of one optimizer update, around the compiled `TrainStep`: written once for the
Trainer, `bench.py` and the tests.

`HostLoop.run(batches, step)` takes `grad_accum` micro-batches from the iterator `batches`, one
at a time, and for each draws from the run's generator `rng`, in this order:

    t     = rng.integers(0, timesteps, size=(B,), dtype=np.int32)
    noise = rng.standard_normal(x0.shape, dtype=np.float32)
    drop  = rng.random(B) < cond_drop_prob      (class-conditional models only: a dropped label
                                                  becomes num_classes, "no class", for guidance)

It calls `TrainStep.micro` on every micro-batch but the last and `TrainStep.update` on the last,
reads back the loss (mean over the micro-batches), the gradient norm, the learning rate and
whether the loss scaler skipped the update, stops on a non-finite loss or gradient norm
(`NonFiniteLoss`, before the EMA sees the weights), and lets the EMA average for `step`.

The generator's state is saved in every checkpoint, so this order is part of the checkpoint
format: a resumed run continues the same stream and matches a straight run bit for bit
(tests/training/test_resume.py). Change it and old runs no longer resume exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np


class NonFiniteLoss(FloatingPointError):
    pass


@dataclass
class Update:
    """What one optimizer update reports: the loss (mean over its micro-batches), the gradient
    norm before clipping, the learning rate it used, whether the loss scaler skipped it, the EMA
    decay it averaged with (None: no EMA, or not due) and how many images it saw."""
    loss: float
    grad_norm: float
    lr: float
    skipped: bool
    ema_decay: float | None
    images: int


class HostLoop:
    """One optimizer update of `train_step` (grad_accum micro-batches) with timesteps, noise and
    label drops drawn from `rng`, then `ema.update(step)` when an EMA is given."""

    def __init__(self, train_step, rng: np.random.Generator, timesteps: int, num_classes: int = 0,
                 cond_drop_prob: float = 0.0, ema=None):
        self.train_step, self.rng, self.ema = train_step, rng, ema
        self.timesteps, self.num_classes, self.cond_drop_prob = int(timesteps), int(num_classes), cond_drop_prob

    def run(self, batches, step: int) -> Update:
        """Update number `step` (from 1) on the next grad_accum batches, (x0,) or (x0, labels)."""
        k = self.train_step.grad_accum
        losses, images = [], 0
        for i in range(k):
            x0, *labels = next(batches)
            t, noise = self.noise(x0.shape)
            inputs = (x0, t, noise, self.drop_labels(labels[0])) if self.num_classes else (x0, t, noise)
            images += x0.shape[0]
            if i < k - 1:
                losses.append(float(self.train_step.micro(*inputs).asnumpy()))
            else:
                loss, norm, lr, finite = self.train_step.update(*inputs)
                losses.append(float(loss.asnumpy()))
        loss, norm, lr = float(np.mean(losses)), float(norm.asnumpy()), float(lr.asnumpy())
        skipped = self.train_step.scaler is not None and not bool(finite.asnumpy())
        if not math.isfinite(loss) or not (math.isfinite(norm) or skipped):
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            raise NonFiniteLoss(f"{what} became {value} at step {step}")
        decay = self.ema.update(step) if self.ema is not None else None
        return Update(loss, norm, lr, skipped, decay, images)

    def noise(self, shape):
        """Timesteps and noise for a micro-batch of `shape`, as tensors."""
        t = self.rng.integers(0, self.timesteps, size=(shape[0],), dtype=np.int32)
        noise = self.rng.standard_normal(shape, dtype=np.float32)
        return ms.Tensor(t), ms.Tensor(noise)

    def drop_labels(self, labels):
        """The labels with a random `cond_drop_prob` share set to "no class" (label num_classes),
        drawn after t and the noise."""
        y = labels.asnumpy().astype(np.int32)
        n = self.num_classes
        if y.min() < 0 or y.max() >= n:
            raise ValueError(f"the data holds labels {y.min()}..{y.max()} but the model knows {n} classes "
                             f"(0..{n - 1}): set model.num_classes to at least {y.max() + 1}")
        drop = self.rng.random(y.shape[0]) < self.cond_drop_prob
        return ms.Tensor(np.where(drop, n, y).astype(np.int32))
