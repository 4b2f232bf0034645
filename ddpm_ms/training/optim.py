"""Optimizers and learning-rate schedules.

The schedule is a `LearningRateSchedule` Cell: the optimizer evaluates it from its own
`global_step` inside the compiled step, so the rate is never a host-side value and a resumed
run (whose optimizer state holds `global_step`) continues the same curve.

- "constant": `lr` throughout (after `warmup_steps` of linear warm-up if they are set).
- "warmup-constant": linear warm-up over `warmup_steps`, then `lr`.
- "cosine": linear warm-up, then a half cosine from `lr` to 0 at the last step (the recipe of
  zoubohao's CIFAR-10 DDPM and of diffusers' `get_cosine_schedule_with_warmup`).

Warm-up gives update s (counted from 0) the rate lr * (s + 1) / warmup_steps, so the first
update already moves the weights (diffusers' s / warmup_steps spends it at rate 0).
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

LR_SCHEDULES = ("constant", "cosine", "warmup-constant")
OPTIMIZERS = ("adam", "adamw")


class WarmupSchedule(LearningRateSchedule):
    """lr(step) for `kind` in LR_SCHEDULES; `total_steps` is the cosine's horizon."""

    def __init__(self, lr: float, kind: str = "constant", warmup_steps: int = 0, total_steps: int = 1):
        super().__init__()
        if kind not in LR_SCHEDULES:
            raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
        self.base_lr, self.kind = float(lr), kind
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.cosine = kind == "cosine"
        self.decay_steps = float(max(1, self.total_steps - self.warmup_steps))
        self.warm = float(max(1, self.warmup_steps))

    def construct(self, global_step):
        s = global_step.astype(ms.float32)
        lr = self.base_lr * ops.minimum((s + 1.0) / self.warm, 1.0)
        if self.cosine:
            progress = ops.clamp((s - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return lr

    def at(self, step: int) -> float:
        """The same rate computed on the host, for plots and the log's first row."""
        lr = self.base_lr * min((step + 1) / self.warm, 1.0)
        if self.cosine:
            progress = min(max((step - self.warmup_steps) / self.decay_steps, 0.0), 1.0)
            lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr


def build_optimizer(params, lr_schedule: LearningRateSchedule, name: str = "adam",
                    weight_decay: float = 0.0) -> nn.Optimizer:
    """Adam over `params` driven by `lr_schedule`.

    For "adam", `weight_decay` is the classic L2 term added to the gradient (nn.Adam's own).
    For "adamw" the decay is decoupled (Loshchilov & Hutter): the train step shrinks every
    weight by lr * weight_decay before the Adam update, as torch.optim.AdamW does, so the
    optimizer itself gets weight_decay 0. (MindSpore's nn.AdamWeightDecay has no bias
    correction, so it is not used.)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if weight_decay < 0:
        raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
    coupled = weight_decay if name == "adam" else 0.0
    return nn.Adam(params, learning_rate=lr_schedule, weight_decay=coupled)


def decoupled_decay(name: str, weight_decay: float) -> float:
    """The factor the train step applies before the update: weight_decay for adamw, else 0."""
    return float(weight_decay) if name == "adamw" else 0.0
