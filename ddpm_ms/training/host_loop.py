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

A data-parallel run (training/parallel.py) draws instead each image's t, noise and drop from its
own generator, seeded by (seed, g) with g the image's position in the run's stream of images: image
j of rank r's share of global batch k has g = k * batch_size + j * N + r, the position MindSpore's
round-robin shards give it. So every N draws the same values for the same image (and a resumed
run needs no generator state).
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
                 cond_drop_prob: float = 0.0, ema=None, parallel=None, seed: int = 0):
        self.train_step, self.rng, self.ema = train_step, rng, ema
        self.timesteps, self.num_classes, self.cond_drop_prob = int(timesteps), int(num_classes), cond_drop_prob
        self.parallel, self.seed = parallel, int(seed)

    def run(self, batches, step: int) -> Update:
        """Update number `step` (from 1) on the next grad_accum batches, (x0,) or (x0, labels)."""
        k = self.train_step.grad_accum
        losses, images = [], 0
        for i in range(k):
            x0, *labels = next(batches)
            if self.parallel is not None:
                inputs = self.keyed_inputs(x0, labels, (step - 1) * k + i)
            else:
                t, noise = self.noise(x0.shape)
                inputs = (x0, t, noise, self.drop_labels(labels[0])) if self.num_classes else (x0, t, noise)
            images += x0.shape[0] * (self.parallel.world if self.parallel is not None else 1)
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

    def keyed_inputs(self, x0, labels, batch: int):
        """(x0, t, noise[, labels]) for this rank's share of global batch number `batch`, each image's
        values drawn from a generator of its own (see the module's docstring)."""
        b, world, rank = x0.shape[0], self.parallel.world, self.parallel.rank
        t = np.empty(b, np.int32)
        noise = np.empty(x0.shape, np.float32)
        drop = np.zeros(b, bool)
        for j in range(b):
            g = np.random.default_rng([self.seed, batch * b * world + j * world + rank])
            t[j] = g.integers(0, self.timesteps)
            noise[j] = g.standard_normal(x0.shape[1:], dtype=np.float32)
            drop[j] = g.random() < self.cond_drop_prob
        inputs = (x0, ms.Tensor(t), ms.Tensor(noise))
        if self.num_classes:
            y = self._checked_labels(labels[0])
            inputs += (ms.Tensor(np.where(drop, self.num_classes, y).astype(np.int32)),)
        return inputs

    def _checked_labels(self, labels):
        y = labels.asnumpy().astype(np.int32)
        n = self.num_classes
        if y.min() < 0 or y.max() >= n:
            raise ValueError(f"the data holds labels {y.min()}..{y.max()} but the model knows {n} classes "
                             f"(0..{n - 1}): set model.num_classes to at least {y.max() + 1}")
        return y

    def noise(self, shape):
        """Timesteps and noise for a micro-batch of `shape`, as tensors."""
        t = self.rng.integers(0, self.timesteps, size=(shape[0],), dtype=np.int32)
        noise = self.rng.standard_normal(shape, dtype=np.float32)
        return ms.Tensor(t), ms.Tensor(noise)

    def drop_labels(self, labels):
        """The labels with a random `cond_drop_prob` share set to "no class" (label num_classes),
        drawn after t and the noise."""
        y, n = self._checked_labels(labels), self.num_classes
        drop = self.rng.random(y.shape[0]) < self.cond_drop_prob
        return ms.Tensor(np.where(drop, n, y).astype(np.int32))
