"""Building blocks shared by the denoisers.

`Conv2d` is the device seam for convolutions: the same weight and bias parameters, computed
either by MindSpore's native convolution (Ascend, GPU) or as im2col (`ops.unfold`) followed by
a 1x1 convolution (CPU, where MindSpore 2.10 runs k x k convolutions on oneDNN's reference
kernel). The formulation is fixed at construction; `tests/models/test_layers.py` checks that
both give the same outputs and gradients.
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from ddpm_ms.device import kernel_formulation

FORMULATIONS = ("native", "im2col")


class Conv2d(nn.Cell):
    """2-D convolution with PyTorch's initialisation and a device-chosen formulation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 has_bias=True, formulation=None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels} -> {out_channels}) must divide by groups={groups}")
        formulation = formulation or kernel_formulation()
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown convolution formulation {formulation!r}; use one of {FORMULATIONS}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        # 1x1 convolutions take oneDNN's fast path everywhere: im2col would only add a copy.
        self.formulation = "native" if kernel_size == 1 else formulation
        fan_in = in_channels // groups * kernel_size * kernel_size
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), shape, ms.float32), name="weight")
        self.has_bias = has_bias
        self.bias = Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), (out_channels,), ms.float32),
                              name="bias") if has_bias else None

    def construct(self, x):
        if self.formulation == "native":
            y = ops.conv2d(x, self.weight, None, self.stride, "pad", self.padding, 1, self.groups)
        else:
            y = self._im2col(x)
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def _im2col(self, x):
        b, c, h, w = x.shape
        k, s, p, g = self.kernel_size, self.stride, self.padding, self.groups
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        cols = ops.unfold(x, k, 1, p, s)  # (b, c*k*k, ho*wo), channel-major like the weight
        if g == 1:
            weight = self.weight.reshape(self.out_channels, c * k * k, 1, 1)
            return ops.conv2d(cols.reshape(b, c * k * k, ho, wo), weight)
        cols = cols.reshape(b, g, c // g * k * k, ho * wo)
        weight = self.weight.reshape(g, self.out_channels // g, c // g * k * k)
        return ops.matmul(weight, cols).reshape(b, self.out_channels, ho, wo)

    def extend_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, formulation={self.formulation}")


class SinusoidalTimeEmbedding(nn.Cell):
    """Transformer-style sin/cos embedding of the (float) timestep, as in DDPM."""

    def __init__(self, dim):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"time embedding dim must be even and >= 4, got {dim}")
        half = dim // 2
        freqs = [math.exp(-math.log(10000.0) * i / (half - 1)) for i in range(half)]
        self.freqs = ms.Tensor([freqs], ms.float32)

    def construct(self, t):
        args = t.reshape(-1, 1).astype(ms.float32) * self.freqs
        return ops.cat((ops.sin(args), ops.cos(args)), axis=-1)


def space_to_depth(x):
    """(b, c, h, w) -> (b, 4c, h/2, w/2): the lossless 2x downsampling of the annotated U-Net."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def upsample_nearest(x):
    """(b, c, h, w) -> (b, c, 2h, 2w), nearest neighbour, by broadcasting (every backend has it)."""
    b, c, h, w = x.shape
    x = ops.broadcast_to(x.reshape(b, c, h, 1, w, 1), (b, c, h, 2, w, 2))
    return x.reshape(b, c, h * 2, w * 2)
