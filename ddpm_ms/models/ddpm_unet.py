"""The U-Net of the DDPM paper (Ho et al. 2020, appendix B) as a MindSpore Cell.

A PixelCNN++-like backbone: `num_res_blocks` residual blocks per resolution level, self-attention
after the blocks of the levels named in `attn_resolutions`, a stride-2 3x3 convolution down and
nearest-neighbour 2x + 3x3 convolution up, GroupNorm(32) everywhere, dropout inside every
residual block, and the timestep's sinusoidal embedding through a two-layer MLP added to every
block. The decoder has one more block per level than the encoder, each fed one skip connection.
With the paper's CIFAR-10 settings (ch 128, mults (1, 2, 2, 2), 2 blocks, attention at 16x16,
dropout 0.1) it has 35,746,307 parameters, the "35.7M" of the paper.

As in the paper's code, the last convolution of every residual block, the attention's output
projection and the output convolution start at zero, so every block starts as the identity.
A class-conditional model adds a learned label embedding to the time embedding (label
`num_classes` is "no class", for classifier-free guidance), as ddpm_ms's other U-Net does.
Downsampling pads 1 on every side (diffusers' form) where the paper's TF code pads bottom-right
only; the parameters are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mindspore import nn, ops
from mindspore.common.initializer import Zero, initializer

from ddpm_ms.config import ModelConfig
from ddpm_ms.models.layers import (BatchMatMul, Conv2d, Dense, GroupNorm, SinusoidalTimeEmbedding, Softmax,
                                   add_label)
from ddpm_ms.models.unet import UNet, Upsample, check_dropout, check_groups, check_levels
from ddpm_ms.registry import BACKBONES, Backbone

NORM_EPS = 1e-6  # the paper's TF GroupNorm


@dataclass
class DDPMUNetConfig(ModelConfig):
    """The DDPM paper's U-Net: dim (the paper's ch), dim_mults (ch_mult), num_res_blocks per level,
    attn_resolutions (the side lengths, in pixels, of the levels with self-attention) with attn_heads
    heads, dropout inside every residual block, GroupNorm of resnet_groups groups."""
    arch: str = "ddpm_unet"
    flags: ClassVar[dict] = {"--dim": ("dim", "the DDPM U-Net's ch: channels of its first level (cifar10: 128)")}
    dim: int = 28
    dim_mults: tuple = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    attn_heads: int = 4
    dropout: float = 0.0
    resnet_groups: int = 4

    def validate(self) -> None:
        super().validate()
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        check_dropout(self.dropout)
        self.dim_mults = check_levels(self.image_size, self.dim_mults)
        check_groups([self.dim] + [self.dim * m for m in self.dim_mults], self.resnet_groups)
        if int(self.num_res_blocks) < 1:
            raise ValueError(f"model.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        sides = [min(self.image_size) // 2 ** i for i in range(len(self.dim_mults))]
        if any(r not in sides for r in self.attn_resolutions):
            raise ValueError(f"model.attn_resolutions {self.attn_resolutions} names a side length the model never "
                             f"has: its levels are {sides} pixels; pick from those (or () for no attention "
                             "outside the middle)")
        bad = [self.dim * m for m in self.dim_mults if (self.dim * m) % int(self.attn_heads)]
        if bad:
            raise ValueError(f"level widths {bad} do not divide by model.attn_heads={self.attn_heads}")


def zero_init(cell):
    """`cell` with its weight and bias set to zero (the paper's near-zero init of the last layer of a residual branch)."""
    for p in (cell.weight, cell.bias):
        p.set_data(initializer(Zero(), p.shape, p.dtype))
    return cell


class ResBlock(nn.Cell):
    """GroupNorm -> SiLU -> conv 3x3, plus Dense(SiLU(time embedding)) per channel, then GroupNorm ->
    SiLU -> dropout -> conv 3x3; added to the input (through a 1x1 conv when the width changes)."""

    def __init__(self, dim, dim_out, time_dim, groups, dropout):
        super().__init__()
        self.norm1 = GroupNorm(groups, dim, eps=NORM_EPS)
        self.conv1 = Conv2d(dim, dim_out, 3, padding=1)
        self.time_proj = Dense(time_dim, dim_out)
        self.norm2 = GroupNorm(groups, dim_out, eps=NORM_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = zero_init(Conv2d(dim_out, dim_out, 3, padding=1))
        self.skip = Conv2d(dim, dim_out, 1) if dim != dim_out else None
        self.dim_out = dim_out

    def construct(self, x, t_emb):
        h = self.conv1(self.norm1.silu(x))
        h = h + self.time_proj(ops.silu(t_emb)).reshape(x.shape[0], self.dim_out, 1, 1)
        h = self.conv2(self.dropout(self.norm2.silu(h)))
        if self.skip is not None:
            x = self.skip(x)
        return x + h


class AttnBlock(nn.Cell):
    """x + proj(softmax(q^T k / sqrt(d)) v) over all pixels, q, k, v 1x1 convolutions of
    GroupNorm(x); `heads` heads of width channels / heads (the paper: one head)."""

    def __init__(self, dim, groups, heads=1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} does not divide by model.attn_heads={heads}")
        self.heads, self.dim_head = heads, dim // heads
        self.scale = self.dim_head ** -0.5
        self.norm = GroupNorm(groups, dim, eps=NORM_EPS)
        self.q, self.k, self.v = (Conv2d(dim, dim, 1) for _ in range(3))
        self.proj = zero_init(Conv2d(dim, dim, 1))
        self.matmul_tn = BatchMatMul(transpose_a=True)  # q^T k without a transpose copy
        self.matmul_nt = BatchMatMul(transpose_b=True)
        self.softmax = Softmax(axis=-1)

    def construct(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, self.heads, self.dim_head, h * w) * self.scale
        k = self.k(n).reshape(b, self.heads, self.dim_head, h * w)
        v = self.v(n).reshape(b, self.heads, self.dim_head, h * w)
        attn = self.softmax(self.matmul_tn(q, k))  # (b, heads, n, n)
        out = self.matmul_nt(v, attn)  # (b, heads, d, n)
        return x + self.proj(out.reshape(b, c, h, w))


class ResAttn(nn.Cell):
    """A residual block, followed by self-attention at the resolutions that have it."""

    def __init__(self, dim, dim_out, time_dim, groups, dropout, attention, heads):
        super().__init__()
        self.res = ResBlock(dim, dim_out, time_dim, groups, dropout)
        self.attn = AttnBlock(dim_out, groups, heads) if attention else None

    def construct(self, x, t_emb):
        x = self.res(x, t_emb)
        if self.attn is not None:
            x = self.attn(x)
        return x


class Downsample(nn.Cell):
    """Stride-2 3x3 convolution (same width)."""

    def __init__(self, dim):
        super().__init__()
        self.conv = Conv2d(dim, dim, 3, stride=2, padding=1)

    def construct(self, x, t_emb):
        return self.conv(x)


class Up(nn.Cell):
    """Nearest-neighbour 2x then a 3x3 convolution (same width)."""

    def __init__(self, dim):
        super().__init__()
        self.up = Upsample(dim, dim)

    def construct(self, x, t_emb):
        return self.up(x)


class DDPMUNet(nn.Cell):
    """Noise-prediction U-Net of the DDPM paper: `construct(x, t, y=None)` maps images (b, c, h, w),
    timesteps (b,) and, for a class-conditional model, int32 labels (b,) to a tensor of the shape
    of `x`. Reads model.dim (ch), dim_mults (ch_mult), num_res_blocks, attn_resolutions (side
    lengths, in pixels, of the levels with attention), attn_heads, dropout, resnet_groups."""

    label_table, time_bias = UNet.label_table, UNet.time_bias

    def __init__(self, config: DDPMUNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        ch, groups, drop, heads = config.dim, config.resnet_groups, config.dropout, config.attn_heads
        time_dim = ch * 4
        self.time_mlp = nn.SequentialCell(SinusoidalTimeEmbedding(ch), Dense(ch, time_dim), nn.SiLU(),
                                          Dense(time_dim, time_dim))
        self.num_classes = int(config.num_classes)
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, time_dim)
        self.init_conv = Conv2d(config.channels, ch, 3, padding=1)

        attn_at = set(config.attn_resolutions)
        size = min(config.image_size)  # a level's side; attention is placed by the shorter side
        widths = [ch]  # the width of every skip connection, in the order the encoder makes them
        width, down = ch, []
        levels = len(config.dim_mults)
        for level, mult in enumerate(config.dim_mults):
            for _ in range(config.num_res_blocks):
                down.append(ResAttn(width, ch * mult, time_dim, groups, drop, size in attn_at, heads))
                width = ch * mult
                widths.append(width)
            if level != levels - 1:
                down.append(Downsample(width))
                widths.append(width)
                size //= 2
        self.down = nn.CellList(down)
        self.mid1 = ResAttn(width, width, time_dim, groups, drop, True, heads)
        self.mid2 = ResAttn(width, width, time_dim, groups, drop, False, heads)
        up, takes_skip = [], []
        for level, mult in reversed(list(enumerate(config.dim_mults))):
            for _ in range(config.num_res_blocks + 1):
                up.append(ResAttn(width + widths.pop(), ch * mult, time_dim, groups, drop, size in attn_at, heads))
                takes_skip.append(True)
                width = ch * mult
            if level != 0:
                up.append(Up(width))
                takes_skip.append(False)
                size *= 2
        self.up = nn.CellList(up)
        self.takes_skip = tuple(takes_skip)  # compile-time constants: which up units read a skip
        self.final_norm = GroupNorm(groups, width, eps=NORM_EPS)
        self.final_conv = zero_init(Conv2d(width, config.out_channels, 3, padding=1))

    def construct(self, x, t, y=None):
        t_emb = self.time_mlp(t)
        if self.num_classes:
            t_emb = add_label(t_emb, self.class_emb, self.num_classes, y, x.shape[0])
        h = self.init_conv(x)
        skips = [h]
        for unit in self.down:
            h = unit(h, t_emb)
            skips.append(h)
        h = self.mid2(self.mid1(h, t_emb), t_emb)
        i = len(skips)  # a compile-time int: graph mode cannot pop from a list
        for unit, skip in zip(self.up, self.takes_skip):
            if skip:
                h = ops.cat((h, skips[i - 1]), axis=1)
                i -= 1
            h = unit(h, t_emb)
        return self.final_conv(self.final_norm.silu(h))


BACKBONES.register(Backbone("ddpm_unet", DDPMUNet, DDPMUNetConfig, "DDPM U-Net",
                            tiny={"dim": 8, "dim_mults": (1, 2), "num_res_blocks": 1, "attn_resolutions": (),
                                  "resnet_groups": 4}))
