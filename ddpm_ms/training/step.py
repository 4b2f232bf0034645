"""The compiled optimizer update: forward, loss, gradients, (accumulation), global-norm
clipping, decoupled weight decay and the Adam step, with optional dynamic loss scaling.

Gradient accumulation over k micro-batches uses two compiled functions: `micro` adds a
micro-batch's gradients (divided by k) into accumulator parameters on the device, and
`update` adds the last micro-batch's, applies the sum and zeroes the accumulators. Every
micro-batch's loss is a mean over the same number of images, so k micro-batches make the same
update as one batch k times larger (tests/training/test_step.py checks it).

With a loss scaler (mixed precision), the loss is multiplied by the scale before the
gradients are taken and the gradients divided by it after; an update whose gradients are not
all finite is skipped (weights, optimizer state and the accumulators' sum are dropped) and the
scale shrinks, as in MindSpore's `DynamicLossScaler` and torch's GradScaler.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


_flat = ops.MultitypeFuncGraph("flat_float32")
_scaled = ops.MultitypeFuncGraph("scaled")
_decayed = ops.MultitypeFuncGraph("decayed")
_HYPER_MAP = ops.HyperMap()


@_flat.register("Tensor")
def _flat_one(g):
    return g.astype(ms.float32).reshape(-1)


@_scaled.register("Tensor", "Tensor")
def _scaled_one(factor, g):
    return g * factor.astype(g.dtype)


@_decayed.register("Tensor", "Tensor")
def _decayed_one(keep, p):
    return ops.assign(p, p * keep)


_accumulated = ops.MultitypeFuncGraph("accumulated")
_zeroed = ops.MultitypeFuncGraph("zeroed")


@_accumulated.register("Number", "Tensor", "Tensor")
def _accumulated_one(share, a, g):
    return ops.assign_add(a, g * share)


@_zeroed.register("Tensor")
def _zeroed_one(a):
    return ops.assign(a, ops.zeros_like(a))


# HyperMap, not Python loops or comprehensions over the parameters: MindSpore compiles those by
# recursion, and the 35.7M-parameter DDPM U-Net's few hundred tensors exceed its call-depth limit.
def global_norm(grads):
    """sqrt of the sum of squares of every gradient, in float32, over one concatenation: a square
    and a sum per parameter tensor are two graph ops each, which on CPU cost more to launch than
    the copy."""
    flat = ops.cat(_HYPER_MAP(_flat, grads))
    return ops.sqrt(ops.square(flat).sum())


def clip_by_norm(grads, norm, max_norm):
    """Every gradient times max_norm / max(norm, max_norm) (`ops.clip_by_global_norm` with the
    norm already known)."""
    factor = max_norm / ops.maximum(norm, max_norm)
    return _HYPER_MAP(ops.partial(_scaled, factor), grads)


class TrainStep:
    """`update(x0, t, noise[, y]) -> (loss, grad_norm, lr, finite)` performs one optimizer step;
    with grad_accum k, call `micro(x0, t, noise[, y]) -> loss` k - 1 times before it. `y`: the
    class labels, for a class-conditional model.

    loss is the mean over the micro-batch(es) of this call, grad_norm the global norm before
    clipping (of the accumulated, unscaled gradients), lr the rate the update used, finite
    False when the loss scaler skipped the update.
    """

    def __init__(self, diffusion: nn.Cell, optimizer: nn.Optimizer, grad_accum: int = 1, clip_grad=None,
                 weight_decay: float = 0.0, loss_scaler=None, jit: bool = True, parallel=None):
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        if clip_grad is not None and not clip_grad > 0:
            raise ValueError(f"clip_grad must be positive (or None for no clipping), got {clip_grad}")
        self.diffusion, self.optimizer = diffusion, optimizer
        self.params = optimizer.parameters
        self.grad_accum, self.clip_grad = int(grad_accum), clip_grad
        self.weight_decay, self.scaler = float(weight_decay), loss_scaler
        self.grad_fn = ms.value_and_grad(self._scaled_loss, None, self.params)
        self.accum = (ms.ParameterTuple(list(self.params)).clone(prefix="accum", init="zeros")
                      if grad_accum > 1 else None)
        self.hyper_map = ops.HyperMap()
        # Data parallelism (training/parallel.py): the gradients and the loss are averaged across ranks.
        self.reducer = parallel.grad_reducer(self.params) if parallel is not None else None
        self.all_reduce = ops.AllReduce() if parallel is not None else None
        self.world = parallel.world if parallel is not None else 1
        self.micro = ms.jit(self._micro) if jit else self._micro
        self.update = ms.jit(self._update) if jit else self._update

    # Everything below is compiled; Python conditions test construction-time settings only.
    def _scaled_loss(self, *batch):
        loss = self.diffusion(*batch)
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def _grads(self, *batch):
        loss, grads = self.grad_fn(*batch)
        if self.scaler is not None:
            loss, grads = self.scaler.unscale(loss), self.scaler.unscale(grads)
        return loss, grads

    def _add_share(self, accumulated, grad):
        return accumulated + grad / self.grad_accum

    def _micro(self, *batch):
        loss, grads = self._grads(*batch)
        self.hyper_map(ops.partial(_accumulated, 1.0 / self.grad_accum), self.accum, grads)
        return loss

    def _apply(self, grads, norm, lr):
        if self.clip_grad is not None:
            grads = clip_by_norm(grads, norm, self.clip_grad)
        if self.weight_decay:
            self.hyper_map(ops.partial(_decayed, 1.0 - lr * self.weight_decay), self.params)
        return self.optimizer(grads)

    def _update(self, *batch):
        loss, grads = self._grads(*batch)
        if self.accum is not None:
            grads = self.hyper_map(self._add_share, self.accum, grads)
        if self.reducer is not None:  # before the norm: every rank clips and applies the same mean
            grads = self.reducer(grads)
            loss = self.all_reduce(loss) / self.world
        lr = self.optimizer.get_lr()
        norm = global_norm(grads)
        if self.scaler is not None:
            finite = ms.amp.all_finite(grads)
            self.scaler.adjust(finite)
            if finite:
                grads = ops.depend(grads, self._apply(grads, norm, lr))
        else:
            finite = ops.isfinite(norm)
            grads = ops.depend(grads, self._apply(grads, norm, lr))
        if self.accum is not None:  # after the sum was read (side effects keep program order)
            self.hyper_map(_zeroed, self.accum)
        return loss, norm, lr, finite


def make_train_step(diffusion, optimizer, jit: bool = True, **options) -> TrainStep:
    """A `TrainStep`; options are those of TrainStep (grad_accum, clip_grad, weight_decay,
    loss_scaler, parallel)."""
    return TrainStep(diffusion, optimizer, jit=jit, **options)
