"""Exponential moving average of a model's weights (Polyak averaging), the weights that
DDPM samples from (Ho et al. 2020 report their sample quality with it).

The average lives in a second model of the same config (`ema_model`), which can be sampled
from directly. After update n (counted from 0):

    decay_n = min(decay, (1 + n) / (10 + n))   with warm-up (diffusers' EMAModel default)
    ema     = ema + (1 - decay_n) * (weights - ema)

The warm-up keeps the average close to the current weights early on, when the first random
weights would otherwise linger for thousands of steps; with decay 0.999 it reaches the cap
after about 9,000 updates. `update_every` k averages every k-th optimizer step only (cheaper
on slow hosts); the decay then applies per update, so k = 10 with 0.995 (lucidrains' default)
averages over about as many steps as 0.9995 every step, once the cap is reached (after 1,790
updates). A shorter run stays on the warm-up, which averages about the last n / 9 updates: the
Fashion-MNIST preset's 750 updates end at 0.988, and that length beat four other lengths and the raw weights in
docs/experiments/recipe_search.md.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

_lerp = ops.MultitypeFuncGraph("ema_lerp")


@_lerp.register("Tensor", "Tensor", "Tensor")
def _lerp_one(weight, shadow, live):
    """shadow += weight * (live - shadow), in place."""
    return ops.assign(shadow, shadow + weight * (live - shadow))


class EMA:
    """Keeps `ema_model`'s parameters an average of `model`'s. `update(step)` is called after
    every optimizer step and averages when `step` is a multiple of `update_every`."""

    def __init__(self, model: nn.Cell, ema_model: nn.Cell, decay: float = 0.9999, update_every: int = 1,
                 warmup: bool = True, jit: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay} (0 turns EMA off before building one)")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        live = dict(model.parameters_and_names())
        shadow = dict(ema_model.parameters_and_names())
        if set(live) != set(shadow) or any(live[k].shape != shadow[k].shape for k in live):
            raise ValueError("the EMA model must have the same parameters as the model it averages")
        self.names = sorted(live)
        self.live = ms.ParameterTuple([live[k] for k in self.names])
        self.shadow = ms.ParameterTuple([shadow[k] for k in self.names])
        for name, p in zip(self.names, self.shadow):
            p.name = f"ema.{name}"  # one graph may not hold two parameters of the same name
            p.requires_grad = False
        self.model, self.ema_model = model, ema_model
        self.decay, self.update_every, self.warmup = float(decay), int(update_every), bool(warmup)
        self.num_updates = 0
        self.copy_from_model()
        self.ema_model.set_train(False)
        self._average = _averager(self.shadow, self.live, jit)

    def decay_at(self, num_updates: int) -> float:
        """The decay the (num_updates)-th update uses (counted from 0)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))

    def update(self, step: int) -> float | None:
        """Average if `step` (optimizer steps done, from 1) is due; returns the decay used, or
        None when this step is skipped."""
        if step % self.update_every:
            return None
        decay = self.decay_at(self.num_updates)
        self._average(ms.Tensor(1.0 - decay, ms.float32))
        self.num_updates += 1
        return decay

    def copy_from_model(self) -> None:
        """Start (or restart) the average at the model's current weights."""
        for s, p in zip(self.shadow, self.live):
            s.set_data(p.data.copy())


def _averager(shadow, live, jit):
    """average(weight): shadow += weight * (live - shadow) for every pair, weight = 1 - decay.
    One HyperMap over the pairs compiles in about 1.5 s for the default U-Net; a Python loop
    over them took 6 s and ran 30% slower."""
    hyper_map = ops.HyperMap()

    def average(weight):
        return hyper_map(ops.partial(_lerp, weight), shadow, live)

    return ms.jit(average) if jit else average
