"""DiT, the Diffusion Transformer of Peebles & Xie 2023 ("Scalable Diffusion Models with
Transformers"), in pixel space, as a MindSpore Cell.

The image is cut into patch x patch tiles by a patch-size-stride convolution, each tile becomes a
token with a fixed 2-D sin-cos position embedding; the timestep (sinusoid + MLP) and the class label
(a learned table with a "no class" row) sum to one conditioning vector c. Each DiT block is
self-attention then an MLP, each behind a LayerNorm whose scale and shift, and a gate on the
residual branch, are regressed from c (adaLN-Zero). The regressors and the output layer start at
zero, so every block starts as the identity and the untrained model predicts 0. A final adaptive
LayerNorm and a linear layer give each token its tile back (unpatchify).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal, Uniform, XavierUniform, Zero, initializer

from ddpm_ms.config import ModelConfig
from ddpm_ms.models.layers import (Dense, GatedResidual, Gelu, LayerNorm, PackedSelfAttention, PatchEmbed,
                                   SinusoidalTimeEmbedding, add_label)
from ddpm_ms.registry import BACKBONES, Backbone

TIME_FREQUENCIES = 256  # width of the timestep's sinusoid before the MLP: DiT's width, the U-Net's sinusoid


@dataclass
class DiTConfig(ModelConfig):
    """DiT (Peebles & Xie 2023): patch_size pixels per side of a token's tile, hidden_size the token
    width, depth DiT blocks of attn_heads heads, an MLP of mlp_ratio x hidden_size units."""
    arch: str = "dit"
    flags: ClassVar[dict] = {"--patch-size": ("patch_size", "pixels per side of a DiT token's tile (dit_* presets: 4)"),
                             "--hidden-size": ("hidden_size", "DiT token width (dit_* presets: 64)"),
                             "--depth": ("depth", "number of DiT blocks (dit_* presets: 3)"),
                             "--heads": ("attn_heads", "attention heads per DiT block (dit_* presets: 4)")}
    patch_size: int = 2
    hidden_size: int = 64
    depth: int = 3
    attn_heads: int = 4
    mlp_ratio: float = 4.0

    def validate(self) -> None:
        super().validate()
        h, w, p = *self.image_size, int(self.patch_size)
        if p < 1 or h % p or w % p:
            raise ValueError(f"image size {h}x{w} does not divide by model.patch_size={self.patch_size}; "
                             f"resize the images or pick a patch size (train.py --patch-size) that divides both sides")
        if int(self.depth) < 1:
            raise ValueError(f"model.depth must be >= 1 DiT block, got {self.depth} (train.py --depth)")
        if not int(self.hidden_size * self.mlp_ratio) >= 1:
            raise ValueError(f"model.mlp_ratio={self.mlp_ratio} leaves the MLP no units at width "
                             f"{self.hidden_size}; use a ratio of about 4 (DiT's)")
        if int(self.attn_heads) < 1:
            raise ValueError(f"model.attn_heads must be >= 1, got {self.attn_heads} (train.py --heads)")
        if int(self.hidden_size) < 4 or self.hidden_size % 4 or self.hidden_size % self.attn_heads:
            heads = [n for n in range(1, self.hidden_size + 1) if self.hidden_size % n == 0] \
                if self.hidden_size >= 4 and self.hidden_size % 4 == 0 else []
            fix = f"at width {self.hidden_size}, --heads may be one of {heads}" if heads else \
                "choose a width (train.py --hidden-size) that is a multiple of 4"
            raise ValueError(f"model.hidden_size={self.hidden_size} must be a multiple of 4 (the 2-D sin-cos "
                             f"position embedding) and of model.attn_heads={self.attn_heads}: {fix}")


def sincos_position_embedding(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """(grid_h * grid_w, dim) fixed embedding of the token positions in row-major order: the first
    half of each row encodes the column, the second half the row, each as sin | cos of dim/4
    frequencies (MAE's and DiT's 2-D sin-cos)."""
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                             indexing="ij")

    def embed(pos):
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed(cols), embed(rows)], axis=1).astype(np.float32)


class Attention(nn.Cell):
    """Multi-head self-attention over tokens (b, n, d): one qkv projection, softmax(q k^T / sqrt(dh)) v."""

    def __init__(self, dim, heads):
        super().__init__()
        self.qkv = Dense(dim, dim * 3)
        self.attend = PackedSelfAttention(heads)
        self.proj = Dense(dim, dim)

    def construct(self, x):
        return self.proj(self.attend(self.qkv(x)))


class DiTBlock(nn.Cell):
    """x + gate * Attention(modulate(LN(x))), then x + gate * MLP(modulate(LN(x))); the six
    shift/scale/gate vectors come from the conditioning by one linear layer (adaLN-Zero)."""

    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dim = dim
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.SequentialCell(Dense(dim, hidden), Gelu(), Dense(hidden, dim))
        self.adaLN_modulation = nn.SequentialCell(nn.SiLU(), Dense(dim, 6 * dim))
        self.residual = GatedResidual()

    def construct(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ops.split(
            self.adaLN_modulation(c), self.dim, axis=1)
        x = self.residual(x, gate_msa, self.attn(self.norm1.modulate(x, shift_msa, scale_msa)))
        return self.residual(x, gate_mlp, self.mlp(self.norm2.modulate(x, shift_mlp, scale_mlp)))


class FinalLayer(nn.Cell):
    """Adaptive LayerNorm, then a linear map from each token to its patch x patch x channels tile."""

    def __init__(self, dim, patch_size, out_channels):
        super().__init__()
        self.dim = dim
        self.norm_final = LayerNorm(dim)
        self.linear = Dense(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.SequentialCell(nn.SiLU(), Dense(dim, 2 * dim))

    def construct(self, x, c):
        shift, scale = ops.split(self.adaLN_modulation(c), self.dim, axis=1)
        return self.linear(self.norm_final.modulate(x, shift, scale))


class DiT(nn.Cell):
    """Diffusion Transformer with the U-Net's interface: `construct(x, t, y=None)` maps images
    (b, c, h, w), timesteps (b,) and, for a class-conditional model (config.num_classes > 0), int32
    labels (b,) to a tensor of x's shape. Label `num_classes`, or no `y`, means "no class"."""

    label_table, time_bias = "class_emb.embedding_table", "time_mlp.3.bias"  # see UNet

    def __init__(self, config: DiTConfig):
        super().__init__()
        config.validate()
        self.config = config
        dim, p, channels = config.hidden_size, config.patch_size, config.channels
        h, w = config.image_size
        self.patch_size, self.grid = p, (h // p, w // p)
        self.out_channels = config.out_channels
        self.x_embedder = PatchEmbed(channels, dim, p)  # patchify: a patch-size-stride convolution
        self.pos_embed = ms.Tensor(sincos_position_embedding(dim, *self.grid)[None])
        self.time_mlp = nn.SequentialCell(SinusoidalTimeEmbedding(TIME_FREQUENCIES),
                                          Dense(TIME_FREQUENCIES, dim), nn.SiLU(), Dense(dim, dim))
        self.num_classes = int(config.num_classes)
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, dim)
        self.blocks = nn.CellList([DiTBlock(dim, config.attn_heads, config.mlp_ratio)
                                   for _ in range(config.depth)])
        self.final_layer = FinalLayer(dim, p, self.out_channels)
        self._initialise(channels * p * p, dim)

    def _initialise(self, patch_fan_in, dim):
        """DiT's initialisation: Xavier-uniform linear layers with zero biases, the patch
        convolution Xavier-uniform as the matrix it is, N(0, 0.02) for the embeddings, and zero for
        every adaLN regressor and the output layer (so each block starts as the identity)."""
        for name, param in self.parameters_and_names():
            if name.endswith(".bias"):
                param.set_data(initializer(Zero(), param.shape, ms.float32))
            elif name.endswith(".weight") and len(param.shape) == 2:
                param.set_data(initializer(XavierUniform(), param.shape, ms.float32))
        bound = math.sqrt(6.0 / (patch_fan_in + dim))
        self.x_embedder.weight.set_data(initializer(Uniform(bound), self.x_embedder.weight.shape, ms.float32))
        for dense in (self.time_mlp[1], self.time_mlp[3]):
            dense.weight.set_data(initializer(Normal(0.02), dense.weight.shape, ms.float32))
        if self.num_classes:
            table = self.class_emb.embedding_table
            table.set_data(initializer(Normal(0.02), table.shape, ms.float32))
        zeroed = [block.adaLN_modulation[1] for block in self.blocks]
        zeroed += [self.final_layer.adaLN_modulation[1], self.final_layer.linear]
        for dense in zeroed:
            dense.weight.set_data(initializer(Zero(), dense.weight.shape, ms.float32))
            dense.bias.set_data(initializer(Zero(), dense.bias.shape, ms.float32))

    def unpatchify(self, tiles):
        """(b, n, p * p * c) -> (b, c, h, w): each token's tile back in its place."""
        p, (gh, gw), c = self.patch_size, self.grid, self.out_channels
        b = tiles.shape[0]
        x = tiles.reshape(b, gh, gw, p, p, c).transpose(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, gh * p, gw * p)

    def construct(self, x, t, y=None):
        c = self.time_mlp(t)
        if self.num_classes:
            c = add_label(c, self.class_emb, self.num_classes, y, x.shape[0])
        tokens = self.x_embedder(x)
        tokens = tokens + self.pos_embed.astype(tokens.dtype)  # stays half precision under O2
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))


BACKBONES.register(Backbone("dit", DiT, DiTConfig, "DiT",
                            tiny={"patch_size": 4, "hidden_size": 16, "depth": 1, "attn_heads": 2}))
