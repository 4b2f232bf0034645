"""Building blocks shared by the denoisers, and the device seam for the ops that are slow on CPU.

The U-Net's `Conv2d`, `GroupNorm` (with `modulated_silu`), `Softmax`, `BatchMatMul`,
`LinearAttentionCore` and `UpsampleNearest2x`, the DiT's `PatchEmbed`, `LayerNorm` (with `modulate`), `Gelu`,
`PackedSelfAttention` and `GatedResidual`, and the `Dense` both use, hold the same parameters on
every target and pick a formulation once, at construction (`kernels_or_native`, from
`ddpm_ms.device.kernel_formulation`): "native" MindSpore ops on Ascend and GPU; on CPU "aot", the
C++ kernels of `ddpm_ms.kernels`, or, where the kernels cannot be built, "im2col" (pure MindSpore
ops with convolutions as `ops.unfold` + 1x1 convolution; the DiT's layers use their native form).
The models never branch on the choice. `tests/models/test_layers.py` and
`tests/kernels/test_cpu_kernels.py` check that the formulations give the same outputs and gradients.
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from ddpm_ms import kernels
from ddpm_ms.device import FORMULATIONS, kernel_formulation


def kernels_or_native(formulation=None, supported=True) -> str:
    """"aot" where the device's formulation (or the one asked for) is the C++ kernels and they cover
    this layer's settings; "native" otherwise (the layers without an im2col form use their native ops)."""
    return "aot" if supported and (formulation or kernel_formulation()) == "aot" else "native"


class Bfloat16Kernels:
    """The bfloat16 switch of a layer whose C++ kernels have bfloat16 entry points: the layer builds
    its kernel with `_kernel(bf16)`, keeps it in `_aot`, and `matmul_dtype` says which one it runs."""

    matmul_dtype = "float32"

    def _kernel(self, bf16: bool):
        raise NotImplementedError

    def use_bfloat16_matmuls(self) -> bool:
        """Run this layer's products (forward and backward) in bfloat16 with float32 accumulation,
        where it computes with the C++ kernels; True if it now does (see training/amp.py)."""
        if self.formulation != "aot":
            return False
        self._aot, self.matmul_dtype = self._kernel(bf16=True), "bfloat16"
        return True


class Conv2d(Bfloat16Kernels, nn.Cell):
    """2-D convolution with PyTorch's initialisation and a device-chosen formulation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 has_bias=True, formulation=None, space_to_depth=False, out_splits=1):
        super().__init__()
        if out_splits > 1 and (out_channels % out_splits or has_bias):
            raise ValueError("out_splits needs out_channels divisible by it and has_bias=False")
        if space_to_depth and (kernel_size != 1 or stride != 1 or padding or groups != 1 or in_channels % 4):
            raise ValueError("space_to_depth=True needs a 1x1 convolution over 4 * channels")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels} -> {out_channels}) must divide by groups={groups}")
        formulation = formulation or kernel_formulation()
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown convolution formulation {formulation!r}; use one of {FORMULATIONS}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        if formulation == "aot" and (groups != 1 or stride not in kernels.STRIDES
                                     or padding not in kernels.PADDINGS):
            formulation = "im2col"  # the C++ kernel covers groups=1 and the usual strides/paddings
        if formulation == "im2col" and kernel_size == 1:
            formulation = "native"  # 1x1: MindSpore's own kernel is the fallback's fast path
        self.formulation = formulation
        # space_to_depth: the input is first rearranged (b, c, h, w) -> (b, 4c, h/2, w/2); for the
        # C++ kernel that is a 2x2 stride-2 convolution with the same weights, and no copy.
        self.space_to_depth = space_to_depth
        # out_splits: return the output as that many equal channel chunks (q, k, v). The C++
        # path convolves with slices of the weight, so the full output is never split or,
        # in the backward pass, concatenated (both cost more than the convolution itself).
        self.out_splits = out_splits
        self.has_bias = has_bias
        if formulation == "aot":  # bias fused into the kernel: no separate add and reduction
            self._aot = self._kernel(bf16=False)
        fan_in = in_channels // groups * kernel_size * kernel_size
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), shape, ms.float32), name="weight")
        self.bias = Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), (out_channels,), ms.float32),
                              name="bias") if has_bias else None

    def _kernel(self, bf16):
        if self.space_to_depth:
            return kernels.conv2d_op(2, 0, self.has_bias, bf16)
        return kernels.conv2d_op(self.stride, self.padding, self.has_bias, bf16)

    def construct(self, x):
        if self.out_splits > 1:
            return self._split_outputs(x)
        if self.formulation == "aot":
            weight = self.weight
            if self.space_to_depth:
                weight = weight.reshape(self.out_channels, self.in_channels // 4, 2, 2)
            if self.has_bias:
                return self._aot(x, weight, self.bias)
            return self._aot(x, weight)
        if self.space_to_depth:
            y = ops.conv2d(space_to_depth(x), self.weight)
        else:
            y = self._forward_single(x)
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def _split_outputs(self, x):
        if self.formulation == "aot":
            chunks = ops.split(self.weight, self.out_channels // self.out_splits, axis=0)
            return tuple(self._aot(x, w) for w in chunks)
        return ops.split(self._forward_single(x), self.out_channels // self.out_splits, axis=1)

    def _forward_single(self, x):
        """MindSpore's own formulations, without the bias."""
        if self.formulation == "native":
            return ops.conv2d(x, self.weight, None, self.stride, "pad", self.padding, 1, self.groups)
        return self._im2col(x)

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


def add_label(t_emb, class_emb, num_classes: int, y, batch: int):
    """The time embedding plus the class embedding of labels y (None: every image "no class", the label
    num_classes): how every class-conditional backbone here conditions on its labels."""
    if y is None:
        y = ops.full((batch,), num_classes, dtype=ms.int32)
    return t_emb + class_emb(y)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters, gamma and beta) computed by the C++ kernel on CPU."""

    def __init__(self, num_groups, num_channels, eps=1e-5, formulation=None):
        super().__init__(num_groups, num_channels, eps=eps)
        self.formulation = kernels_or_native(formulation, supported=eps in (1e-5, 1e-6))
        self._aot = kernels.group_norm_op(eps) if self.formulation == "aot" else None
        self._fused = kernels.group_norm_silu_op(eps) if self.formulation == "aot" else None
        self._fused_plain = kernels.group_norm_silu_plain_op(eps) if self.formulation == "aot" else None

    def construct(self, x):
        if self.formulation == "aot":
            return self._aot(x.reshape(x.shape[0], self.num_groups, -1), self.gamma, self.beta)[0].reshape(x.shape)
        return super().construct(x)

    def modulated_silu(self, x, scale, shift):
        """SiLU(GroupNorm(x) * (scale + 1) + shift) for per-sample, per-channel scale and shift
        of shape (b, c, 1, 1); one pass over x with the C++ kernel."""
        if self._fused is not None:
            b, c = x.shape[0], x.shape[1]
            return self._fused(x.reshape(b, self.num_groups, -1), self.gamma, self.beta,
                               scale.reshape(b, c), shift.reshape(b, c))[0].reshape(x.shape)
        return ops.silu(self.construct(x) * (scale + 1) + shift)

    def silu(self, x):
        """SiLU(GroupNorm(x)) (the DDPM U-Net's "norm -> SiLU"); one pass over x with the C++ kernel."""
        if self._fused_plain is not None:
            return self._fused_plain(x.reshape(x.shape[0], self.num_groups, -1), self.gamma, self.beta)[0] \
                .reshape(x.shape)
        return ops.silu(self.construct(x))


class Dense(Bfloat16Kernels, nn.Dense):
    """`nn.Dense` (same parameters, weight and bias) computed by the C++ kernel on CPU; input
    (..., in_channels)."""

    def __init__(self, in_channels, out_channels, formulation=None):
        super().__init__(in_channels, out_channels)
        self.formulation = kernels_or_native(formulation)
        self._aot = self._kernel(bf16=False) if self.formulation == "aot" else None

    def _kernel(self, bf16):
        return kernels.dense_op(bf16)

    def construct(self, x):
        if self.formulation == "aot":
            if x.ndim == 2:
                return self._aot(x, self.weight, self.bias)
            lead = x.shape[:-1]
            return self._aot(x.reshape(-1, x.shape[-1]), self.weight, self.bias).reshape(lead + (-1,))
        return super().construct(x)


class Gelu(nn.Cell):
    """GELU with the tanh approximation (DiT's MLP); the C++ kernel on CPU."""

    def __init__(self, formulation=None):
        super().__init__()
        self.formulation = kernels_or_native(formulation)
        self._aot = kernels.gelu_tanh_op() if self.formulation == "aot" else None

    def construct(self, x):
        if self.formulation == "aot":
            return self._aot(x)
        return ops.gelu(x, approximate="tanh")


class ExactGelu(nn.Cell):
    """GELU without approximation, x (1 + erf(x / sqrt 2)) / 2, computed as `nn.GELU(approximate=False)`
    computes it, with the derivative written out: MindSpore's own backward of erf emits
    PowTensorScalar, whose documentation names Ascend only (scripts/check_ops.py)."""

    def __init__(self):
        super().__init__()
        self.sqrt2 = ms.Tensor(math.sqrt(2.0), ms.float32)
        self.inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def construct(self, x):
        return x * (ops.erf(x / self.sqrt2.astype(x.dtype)) + 1.0) * 0.5

    def bprop(self, x, out, dout):
        cdf = (ops.erf(x / self.sqrt2.astype(x.dtype)) + 1.0) * 0.5
        pdf = ops.exp(x * x * -0.5) * self.inv_sqrt_2pi
        return (dout * (cdf + x * pdf),)


class PatchEmbed(Bfloat16Kernels, nn.Cell):
    """Image (b, c, h, w) to tokens (b, n, dim), n = (h / p) (w / p) in row-major order, by a
    patch-size-stride convolution (weight (dim, c, p, p) and bias, PyTorch's initialisation). On CPU
    the patches are cut by a reshape and multiplied by the C++ Dense kernel (MindSpore's convolution
    weight gradient was the costliest op of a small DiT's train step)."""

    def __init__(self, in_channels, dim, patch_size, formulation=None):
        super().__init__()
        self.in_channels, self.dim, self.patch_size = in_channels, dim, patch_size
        self.formulation = kernels_or_native(formulation)
        self._aot = self._kernel(bf16=False) if self.formulation == "aot" else None
        fan_in = in_channels * patch_size * patch_size
        shape = (dim, in_channels, patch_size, patch_size)
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), shape, ms.float32), name="weight")
        self.bias = Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), (dim,), ms.float32), name="bias")

    def _kernel(self, bf16):
        return kernels.dense_op(bf16)

    def construct(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        if self.formulation == "aot":
            patches = x.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * p * p)
            tokens = self._aot(patches, self.weight.reshape(self.dim, c * p * p), self.bias)
            return tokens.reshape(b, gh * gw, self.dim)
        y = ops.conv2d(x, self.weight, None, p, "valid") + self.bias.reshape(1, -1, 1, 1)
        return y.reshape(b, self.dim, gh * gw).transpose(0, 2, 1)


class GatedResidual(nn.Cell):
    """x + gate * y for tokens x, y (b, n, d) and a per-sample gate (b, d): adaLN-Zero's gated
    residual branch, one C++ op on CPU (natively a broadcast multiply and an add, whose gradient
    adds a reduction over the tokens)."""

    def __init__(self, formulation=None):
        super().__init__()
        self.formulation = kernels_or_native(formulation)
        self._aot = kernels.gated_add_op() if self.formulation == "aot" else None

    def construct(self, x, gate, y):
        if self.formulation == "aot":
            return self._aot(x, gate, y)
        return x + gate.expand_dims(1) * y


class PackedSelfAttention(nn.Cell):
    """Multi-head self-attention of packed projections: qkv (b, n, 3 * heads * dh), laid out as
    [q | k | v], each head-major, to softmax(q k^T / sqrt(dh)) v as (b, n, heads * dh). On CPU one
    C++ op that reads the heads in place (no slices, no transposes)."""

    def __init__(self, heads, formulation=None):
        super().__init__()
        self.heads = heads
        self.formulation = kernels_or_native(formulation)
        self._aot = kernels.attention_op() if self.formulation == "aot" else None
        self._scores = ops.BatchMatMul(transpose_b=True)
        self._mix = ops.BatchMatMul()

    def construct(self, qkv):
        b, n, d3 = qkv.shape
        d = d3 // 3
        head_dim = d // self.heads
        qkv = qkv.reshape(b, n, 3, self.heads, head_dim)
        if self.formulation == "aot":
            return self._aot(qkv)[0].reshape(b, n, d)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, b, heads, n, dh)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ops.softmax(self._scores(q, k) * (head_dim ** -0.5), -1)
        return self._mix(attn, v).transpose(0, 2, 1, 3).reshape(b, n, d)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis without learned scale and shift (DiT's, whose adaptive
    `modulate` supplies them per sample), eps 1e-6."""

    def __init__(self, normalized_size, eps=1e-6, formulation=None):
        super().__init__()
        self.normalized_size, self.eps = normalized_size, eps
        self.formulation = kernels_or_native(formulation, supported=eps in (1e-5, 1e-6))
        self._aot = kernels.layer_norm_modulate_op(eps) if self.formulation == "aot" else None
        self._norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self._ones = ms.Tensor(ops.ones((normalized_size,), ms.float32))
        self._zeros = ms.Tensor(ops.zeros((normalized_size,), ms.float32))

    def construct(self, x):
        return self._norm(x, self._ones, self._zeros)[0]

    def modulate(self, x, shift, scale):
        """LayerNorm(x) * (1 + scale) + shift for x (b, n, d) and per-sample shift and scale (b, d);
        one pass over x with the C++ kernel."""
        if self.formulation == "aot":
            return self._aot(x, shift, scale)[0]
        # in float32 under mixed precision (a method call bypasses the cell's input casts)
        y = self.construct(x.astype(ms.float32))
        y = y * (scale.astype(ms.float32).expand_dims(1) + 1) + shift.astype(ms.float32).expand_dims(1)
        return y.astype(x.dtype)


class Softmax(nn.Cell):
    """Softmax over `axis`, by the C++ kernel on CPU (MindSpore's CPU softmax over a middle
    axis, and its backward, cost several times more)."""

    def __init__(self, axis=-1, formulation=None):
        super().__init__()
        self.axis = axis
        self.formulation = kernels_or_native(formulation)
        self._aot = kernels.softmax_op() if self.formulation == "aot" else None

    def construct(self, x):
        if self.formulation != "aot":
            return ops.softmax(x, self.axis)
        shape = x.shape
        axis = self.axis % len(shape)
        outer, inner = 1, 1
        for d in shape[:axis]:
            outer *= d
        for d in shape[axis + 1:]:
            inner *= d
        return self._aot(x.contiguous().reshape(outer, shape[axis], inner)).reshape(shape)


class BatchMatMul(Bfloat16Kernels, nn.Cell):
    """Batched matrix product over the leading dimensions with optional transposes, like
    `ops.BatchMatMul(transpose_a, transpose_b)`; the C++ kernel on CPU."""

    def __init__(self, transpose_a=False, transpose_b=False, formulation=None):
        super().__init__()
        if transpose_a and transpose_b:
            raise ValueError("BatchMatMul: transpose_a and transpose_b together are not supported")
        self.formulation = kernels_or_native(formulation)
        self.transpose_a, self.transpose_b = transpose_a, transpose_b
        self._aot = self._kernel(bf16=False) if self.formulation == "aot" else None
        self._native = ops.BatchMatMul(transpose_a=transpose_a, transpose_b=transpose_b)

    def _kernel(self, bf16):
        nn_op, tn_op, nt_op = kernels.batch_matmul_ops(bf16)
        return tn_op if self.transpose_a else nt_op if self.transpose_b else nn_op

    def construct(self, a, b):
        if self.formulation == "aot":
            return self._aot(a, b)
        return self._native(a, b)


class LinearAttentionCore(Bfloat16Kernels, nn.Cell):
    """Linear attention (Shen et al. 2018) from its input: x (b, c, h, w) and the weight of its 1x1,
    bias-free q, k, v projection (3 heads d, c, 1, 1) give, per head, context = softmax over pixels(k)
    v^T / sqrt(d) and out = context^T softmax over features(q), returned as (b, heads, d, h w). The
    projection's weight stays with its owner (the model's `to_qkv`). On CPU one C++ op per direction
    that keeps q, k, v and their softmaxes in cache (natively a convolution, two softmaxes, two
    batched products and a scale)."""

    def __init__(self, heads, dim_head, formulation=None):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.formulation = kernels_or_native(formulation)
        self._aot = self._kernel(bf16=False) if self.formulation == "aot" else None
        self._context = ops.BatchMatMul(transpose_b=True)
        self._mix = ops.BatchMatMul(transpose_a=True)

    def _kernel(self, bf16):
        return kernels.linear_attention_op(bf16)

    def construct(self, x, weight):
        b, c, h, w = x.shape
        if self.formulation == "aot":
            return self._aot(x, weight.reshape(3, self.heads, self.dim_head, c))
        qkv = ops.conv2d(x, weight).reshape(b, 3, self.heads, self.dim_head, h * w)
        q, k, v = ops.softmax(qkv[:, 0], -2), ops.softmax(qkv[:, 1], -1), qkv[:, 2]
        # the 1/sqrt(d) scale goes on the small (d, d) context, not on q (b, heads, d, pixels)
        context = self._context(k, v) * (self.dim_head ** -0.5)
        return self._mix(context, q)


class UpsampleNearest2x(nn.Cell):
    """(b, c, h, w) -> (b, c, 2h, 2w), nearest neighbour."""

    def __init__(self, formulation=None):
        super().__init__()
        self.formulation = kernels_or_native(formulation)
        self._aot = kernels.upsample2x_op() if self.formulation == "aot" else None

    def construct(self, x):
        if self.formulation == "aot":
            return self._aot(x)
        return upsample_nearest(x)


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
