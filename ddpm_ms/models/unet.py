"""The U-Net of "The Annotated Diffusion Model" (Hugging Face) as a MindSpore Cell.

Sinusoidal time embedding + MLP; per level two ResNet (or ConvNeXt) blocks, linear attention
and a down/up-sampling; full attention in the middle; skip connections between the halves.
A class-conditional U-Net adds a learned embedding of the class label to the time embedding
(as the guided-diffusion U-Net does), so every block sees it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mindspore import nn, ops

from ddpm_ms.config import ModelConfig
from ddpm_ms.models.layers import (BatchMatMul, Conv2d, Dense, ExactGelu, GroupNorm, LinearAttentionCore,
                                   SinusoidalTimeEmbedding, Softmax, UpsampleNearest2x, add_label)
from ddpm_ms.registry import BACKBONES, Backbone

BLOCKS = ("resnet", "convnext")


@dataclass
class UNetConfig(ModelConfig):
    """The annotated-diffusion U-Net: dim, the first level's width (init_dim: the stem's, default dim);
    dim_mults, each level's width as a multiple of dim; block, "resnet" (GroupNorm groups:
    resnet_groups) or "convnext" (its MLP's expansion: convnext_mult); attention heads of
    attn_dim_head channels each; dropout inside the blocks."""
    arch: str = "unet"
    flags: ClassVar[dict] = {"--dim": ("dim", "U-Net base width: channels of its first level (the Fashion-MNIST/MNIST "
                                              "presets: 16)")}
    dim: int = 28
    init_dim: int | None = None
    dim_mults: tuple = (1, 2, 4)
    block: str = "resnet"
    resnet_groups: int = 4
    convnext_mult: int = 2
    dropout: float = 0.0
    attn_heads: int = 4
    attn_dim_head: int = 32

    def validate(self) -> None:
        super().validate()
        if self.block not in BLOCKS:
            raise ValueError(f"model.block must be one of {BLOCKS}, got {self.block!r}")
        self.dim_mults = check_levels(self.image_size, self.dim_mults)
        check_dropout(self.dropout)
        if self.block == "resnet":
            check_groups([self.init_dim or self.dim] + [self.dim * m for m in self.dim_mults], self.resnet_groups)


def check_levels(image_size, dim_mults) -> tuple:
    """dim_mults as a tuple, checked: positive, and the image halves cleanly once per level after the first."""
    dim_mults = tuple(dim_mults)
    if not dim_mults or any(m < 1 for m in dim_mults):
        raise ValueError(f"model.dim_mults must be positive integers, got {dim_mults}")
    factor = 2 ** (len(dim_mults) - 1)
    h, w = image_size
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} does not divide by 2^(levels-1) = {factor} for dim_mults={dim_mults}; "
                         f"resize the images to a multiple of {factor} or use fewer levels")
    return dim_mults


def check_groups(widths, groups: int) -> None:
    if any(c % groups for c in widths):
        raise ValueError(f"every level width {widths} must divide by resnet_groups={groups}: "
                         f"choose a dim (train.py --dim) that is a multiple of {groups}")


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")


class Block(nn.Cell):
    """Conv 3x3 -> GroupNorm -> (scale, shift) -> SiLU -> dropout."""

    def __init__(self, dim, dim_out, groups, dropout=0.0):
        super().__init__()
        self.proj = Conv2d(dim, dim_out, 3, padding=1)
        self.norm = GroupNorm(groups, dim_out)
        self.dropout = nn.Dropout(p=dropout)

    def construct(self, x, scale=None, shift=None):
        x = self.proj(x)
        if scale is not None:
            return self.dropout(self.norm.modulated_silu(x, scale, shift))
        return self.dropout(self.norm.silu(x))


class ResnetBlock(nn.Cell):
    """Two `Block`s; the time embedding sets the first one's scale and shift (Wide ResNet style)."""

    def __init__(self, dim, dim_out, time_emb_dim, groups, dropout=0.0):
        super().__init__()
        self.mlp = nn.SequentialCell(nn.SiLU(), Dense(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups, dropout)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()
        self.dim_out = dim_out

    def construct(self, x, t_emb):
        scale_shift = self.mlp(t_emb).reshape(x.shape[0], self.dim_out * 2, 1, 1)
        scale, shift = ops.split(scale_shift, self.dim_out, axis=1)
        h = self.block2(self.block1(x, scale, shift))
        return h + self.res_conv(x)


class ConvNextBlock(nn.Cell):
    """ConvNeXt block (Liu et al. 2022) with the time embedding added after the depthwise conv."""

    def __init__(self, dim, dim_out, time_emb_dim, mult=2, dropout=0.0):
        super().__init__()
        self.mlp = nn.SequentialCell(ExactGelu(), Dense(time_emb_dim, dim))
        self.ds_conv = Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.net = nn.SequentialCell(
            GroupNorm(1, dim),
            Conv2d(dim, dim_out * mult, 3, padding=1),
            ExactGelu(),
            nn.Dropout(p=dropout),
            GroupNorm(1, dim_out * mult),
            Conv2d(dim_out * mult, dim_out, 3, padding=1),
        )
        self.res_conv = Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()
        self.dim = dim

    def construct(self, x, t_emb):
        h = self.ds_conv(x) + self.mlp(t_emb).reshape(x.shape[0], self.dim, 1, 1)
        return self.net(h) + self.res_conv(x)


class Attention(nn.Cell):
    """Full multi-head self-attention over all pixels (used at the lowest resolution)."""

    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.hidden = heads * dim_head
        self.to_qkv = Conv2d(dim, self.hidden * 3, 1, has_bias=False, out_splits=3)
        self.to_out = Conv2d(self.hidden, dim, 1)
        self.matmul_tn = BatchMatMul(transpose_a=True)  # a^T b without a transpose copy
        self.matmul_nt = BatchMatMul(transpose_b=True)
        self.softmax = Softmax(axis=-1)

    def construct(self, x):
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(x)  # three chunks: indexing a fused tensor costs 40x more on CPU
        q = q.reshape(b, self.heads, self.dim_head, h * w) * self.scale
        k = k.reshape(b, self.heads, self.dim_head, h * w)
        v = v.reshape(b, self.heads, self.dim_head, h * w)
        attn = self.softmax(self.matmul_tn(q, k))  # (b, heads, n, n)
        out = self.matmul_nt(v, attn)  # (b, heads, d, n)
        return self.to_out(out.reshape(b, self.hidden, h, w))


class LinearAttention(nn.Cell):
    """Linear attention (Shen et al. 2018): softmax on q over features and on k over pixels,
    so the cost grows linearly with the number of pixels."""

    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.hidden = heads * dim_head
        self.to_qkv = Conv2d(dim, self.hidden * 3, 1, has_bias=False)  # its weight: attend applies it
        self.to_out = nn.SequentialCell(Conv2d(self.hidden, dim, 1), GroupNorm(1, dim))
        self.attend = LinearAttentionCore(heads, dim_head)

    def construct(self, x):
        b, _, h, w = x.shape
        out = self.attend(x, self.to_qkv.weight)  # (b, heads, d, h w)
        return self.to_out(out.reshape(b, self.hidden, h, w))


class PreNormResidual(nn.Cell):
    """x + fn(GroupNorm(1)(x))."""

    def __init__(self, dim, fn):
        super().__init__()
        self.norm = GroupNorm(1, dim)
        self.fn = fn

    def construct(self, x):
        return x + self.fn(self.norm(x))


class Downsample(nn.Cell):
    """Space-to-depth (no information lost) then a 1x1 conv to the next level's width."""

    def __init__(self, dim, dim_out):
        super().__init__()
        self.conv = Conv2d(dim * 4, dim_out, 1, space_to_depth=True)

    def construct(self, x):
        return self.conv(x)


class Upsample(nn.Cell):
    """Nearest-neighbour 2x then a 3x3 conv."""

    def __init__(self, dim, dim_out):
        super().__init__()
        self.up = UpsampleNearest2x()
        self.conv = Conv2d(dim, dim_out, 3, padding=1)

    def construct(self, x):
        return self.conv(self.up(x))


class UNet(nn.Cell):
    """Noise-prediction U-Net: `construct(x, t, y=None)` maps images (b, c, h, w), timesteps (b,)
    and, for a class-conditional model (config.num_classes > 0), int32 labels (b,) to a tensor of
    the same shape as `x` (noise, x0 or v, as the diffusion asks). Label `num_classes` means "no
    class", and so does leaving `y` out; an unconditional model takes no labels."""

    # The parameters that fine-tuning across label sets rewrites (ddpm_ms.checkpoint.adapt_label_embedding):
    # the label table, and the bias of the time MLP's last Dense layer, whose output the label embedding is added to.
    label_table, time_bias = "class_emb.embedding_table", "time_mlp.3.bias"

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim = config.dim
        init_dim = config.init_dim or dim
        dims = [init_dim] + [dim * m for m in config.dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4

        def block(d_in, d_out):
            if config.block == "convnext":
                return ConvNextBlock(d_in, d_out, time_dim, config.convnext_mult, config.dropout)
            return ResnetBlock(d_in, d_out, time_dim, config.resnet_groups, config.dropout)

        def linear_attention(d):
            return PreNormResidual(d, LinearAttention(d, config.attn_heads, config.attn_dim_head))

        self.init_conv = Conv2d(config.channels, init_dim, 7, padding=3)
        self.time_mlp = nn.SequentialCell(
            SinusoidalTimeEmbedding(dim), Dense(dim, time_dim), ExactGelu(),
            Dense(time_dim, time_dim))
        self.num_classes = int(config.num_classes)
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, time_dim)

        downs, ups = [], []
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            downs.append(nn.CellList([
                block(d_in, d_in), block(d_in, d_in), linear_attention(d_in),
                Conv2d(d_in, d_out, 3, padding=1) if last else Downsample(d_in, d_out)]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = PreNormResidual(mid, Attention(mid, config.attn_heads, config.attn_dim_head))
        self.mid_block2 = block(mid, mid)
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            ups.append(nn.CellList([
                block(d_out + d_in, d_out), block(d_out + d_in, d_out), linear_attention(d_out),
                Conv2d(d_out, d_in, 3, padding=1) if last else Upsample(d_out, d_in)]))
        self.downs = nn.CellList(downs)
        self.ups = nn.CellList(ups)
        self.final_res_block = block(init_dim * 2, dim)
        self.final_conv = Conv2d(dim, config.out_channels, 1)

    def construct(self, x, t, y=None):
        t_emb = self.time_mlp(t)
        if self.num_classes:
            t_emb = add_label(t_emb, self.class_emb, self.num_classes, y, x.shape[0])
        x = self.init_conv(x)
        r = x
        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, t_emb)
            skips.append(x)
            x = attn(block2(x, t_emb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t_emb)), t_emb)
        i = len(skips)  # a compile-time int: graph mode cannot pop from a list
        for block1, block2, attn, up in self.ups:
            x = block1(ops.cat((x, skips[i - 1]), axis=1), t_emb)
            x = block2(ops.cat((x, skips[i - 2]), axis=1), t_emb)
            x = up(attn(x))
            i -= 2
        x = self.final_res_block(ops.cat((x, r), axis=1), t_emb)
        return self.final_conv(x)


def count_parameters(net: nn.Cell) -> int:
    """Number of trainable scalars."""
    return sum(p.size for p in net.trainable_params())


BACKBONES.register(Backbone("unet", UNet, UNetConfig, "U-Net", tiny={"dim": 8, "dim_mults": (1, 2)}))
