"""PyTorch mirror of ddpm_ms.models.dit.DiT (Peebles & Xie 2023, pixel space).

The same architecture with the same parameter names and shapes as the MindSpore version (state
dicts map 1:1 except the label table, embedding_table <-> weight), written the way a PyTorch user
would write it: nn.Conv2d for the patches, nn.LayerNorm, F.scaled_dot_product_attention,
nn.GELU(approximate="tanh"). Config: a dict with ddpm_ms.models.DiTConfig's fields, e.g. DIT_MNIST.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unet_torch import SinusoidalTimeEmbedding

# ddpm_ms.config.preset('dit_mnist').model
DIT_MNIST = dict(image_size=(28, 28), channels=1, patch_size=4, hidden_size=64, depth=3, attn_heads=4,
                 mlp_ratio=4.0, num_classes=10)
TIME_FREQUENCIES = 256


def sincos_position_embedding(dim, grid_h, grid_w):
    """Same as ddpm_ms.models.dit.sincos_position_embedding: column half, then row half."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                             indexing="ij")

    def embed(pos):
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed(cols), embed(rows)], axis=1).astype(np.float32)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim, p, channels = cfg["hidden_size"], cfg["patch_size"], cfg["channels"]
        h, w = cfg["image_size"]
        self.p, self.grid, self.channels = p, (h // p, w // p), channels
        self.x_embedder = nn.Conv2d(channels, dim, p, stride=p)
        self.register_buffer("pos_embed", torch.from_numpy(sincos_position_embedding(dim, *self.grid))[None],
                             persistent=False)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(TIME_FREQUENCIES), nn.Linear(TIME_FREQUENCIES, dim),
                                      nn.SiLU(), nn.Linear(dim, dim))
        self.num_classes = int(cfg.get("num_classes", 0))
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, dim)
        self.blocks = nn.ModuleList([DiTBlock(dim, cfg["attn_heads"], cfg["mlp_ratio"])
                                     for _ in range(cfg["depth"])])
        self.final_layer = FinalLayer(dim, p, channels)

    def forward(self, x, t, y=None):
        c = self.time_mlp(t)
        if self.num_classes:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long)
            c = c + self.class_emb(y)
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens, c)
        tiles = self.final_layer(tokens, c)
        (gh, gw), p, ch = self.grid, self.p, self.channels
        out = tiles.reshape(x.shape[0], gh, gw, p, p, ch).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(x.shape[0], ch, gh * p, gw * p)
