"""A two-parameter stand-in for GaussianDiffusion: loss = mean((x0 * w + b - noise)^2), whose
gradients NumPy can write down, for checking the optimizer arithmetic exactly."""
import mindspore as ms
import numpy as np
from mindspore import nn, ops


class ToyLoss(nn.Cell):
    def __init__(self, w, b):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.asarray(w, np.float32)), name="w")
        self.b = ms.Parameter(ms.Tensor(np.asarray(b, np.float32)), name="b")

    def construct(self, x0, t, noise):
        return ops.square(x0 * self.w + self.b - noise).mean()


def toy_grads(w, b, x0, noise):
    r = x0 * w + b - noise
    n = r.size
    return (2 * r * x0).sum(0) / n, (2 * r).sum(0) / n


def adam_reference(w, b, batches, lrs, weight_decay=0.0, decoupled=False, clip=None, beta1=0.9, beta2=0.999,
                   eps=1e-8):
    """MindSpore nn.Adam's update (eps added to sqrt(v), bias correction folded into the rate)
    with optional global-norm clipping and coupled (L2) or decoupled (AdamW) weight decay."""
    params = [np.array(w, np.float64), np.array(b, np.float64)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step, ((x0, noise), lr) in enumerate(zip(batches, lrs), start=1):
        grads = list(toy_grads(params[0], params[1], x0, noise))
        if clip is not None:
            norm = np.sqrt(sum((g ** 2).sum() for g in grads))
            grads = [g * clip / max(norm, clip) for g in grads]
        if decoupled:
            params = [p * (1 - lr * weight_decay) for p in params]
        elif weight_decay:
            grads = [g + weight_decay * p for g, p in zip(grads, params)]
        lr_t = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            params[i] = params[i] - lr_t * m[i] / (np.sqrt(v[i]) + eps)
    return params
