"""PyTorch mirror of ddpm_ms.models.unet.UNet (the U-Net of "The Annotated Diffusion Model").

Same architecture, same parameter shapes and the same module/attribute names as the MindSpore
version (so state dicts map 1:1 except GroupNorm gamma/beta <-> weight/bias). Written the way a
PyTorch user would write it: nn.Conv2d, nn.GroupNorm, nn.PixelUnshuffle, nn.Upsample, torch.softmax.

Config: a plain dict with the fields of ddpm_ms.models.UNetConfig, e.g. FASHION_MNIST below.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ddpm_ms.config.preset('fashion_mnist').model
FASHION_MNIST = dict(image_size=(28, 28), channels=1, dim=16, init_dim=None, dim_mults=(1, 2, 4),
                     block="resnet", resnet_groups=4, convnext_mult=2, dropout=0.0,
                     attn_heads=4, attn_dim_head=32, num_classes=0)

GN_EPS = 1e-5  # mindspore.nn.GroupNorm default eps (same as torch's default)


def model_config(**overrides) -> dict:
    cfg = dict(FASHION_MNIST)
    cfg.update(overrides)
    return cfg


class SinusoidalTimeEmbedding(nn.Module):
    """sin/cos embedding of the (float) timestep; freqs exp(-log(10000) * i / (half - 1))."""

    def __init__(self, dim):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"time embedding dim must be even and >= 4, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
        self.register_buffer("freqs", freqs.float()[None, :], persistent=False)

    def forward(self, t):
        args = t.float()[:, None] * self.freqs
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Block(nn.Module):
    """Conv 3x3 -> GroupNorm -> (scale, shift) -> SiLU -> dropout."""

    def __init__(self, dim, dim_out, groups, dropout=0.0):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out, eps=GN_EPS)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, scale=None, shift=None):
        x = self.norm(self.proj(x))
        if scale is not None:
            x = x * (scale + 1) + shift
        return self.dropout(self.act(x))


class ResnetBlock(nn.Module):
    def __init__(self, dim, dim_out, time_emb_dim, groups, dropout=0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups, dropout)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, t_emb):
        scale, shift = self.mlp(t_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale, shift))
        return h + self.res_conv(x)


class ConvNextBlock(nn.Module):
    def __init__(self, dim, dim_out, time_emb_dim, mult=2, dropout=0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(time_emb_dim, dim))
        self.ds_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.net = nn.Sequential(
            nn.GroupNorm(1, dim, eps=GN_EPS),
            nn.Conv2d(dim, dim_out * mult, 3, padding=1),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.GroupNorm(1, dim_out * mult, eps=GN_EPS),
            nn.Conv2d(dim_out * mult, dim_out, 3, padding=1),
        )
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, t_emb):
        h = self.ds_conv(x) + self.mlp(t_emb)[:, :, None, None]
        return self.net(h) + self.res_conv(x)


class Attention(nn.Module):
    """Full multi-head self-attention over all pixels."""

    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, self.hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(self.hidden, dim, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = (z.reshape(b, self.heads, self.dim_head, h * w) for z in self.to_qkv(x).chunk(3, dim=1))
        q = q * self.scale
        attn = torch.softmax(q.transpose(-2, -1) @ k, dim=-1)  # (b, heads, n, n)
        out = v @ attn.transpose(-2, -1)  # (b, heads, d, n)
        return self.to_out(out.reshape(b, self.hidden, h, w))


class LinearAttention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, self.hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(self.hidden, dim, 1), nn.GroupNorm(1, dim, eps=GN_EPS))

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = (z.reshape(b, self.heads, self.dim_head, h * w) for z in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = k @ v.transpose(-2, -1)  # (b, heads, d, e)
        out = context.transpose(-2, -1) @ q  # (b, heads, e, n)
        return self.to_out(out.reshape(b, self.hidden, h, w))


class PreNormResidual(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.GroupNorm(1, dim, eps=GN_EPS)
        self.fn = fn

    def forward(self, x):
        return x + self.fn(self.norm(x))


class Downsample(nn.Module):
    """Space-to-depth (pixel_unshuffle, same channel order as einops 'b c (h p1) (w p2) -> b (c p1 p2) h w')
    then a 1x1 conv."""

    def __init__(self, dim, dim_out):
        super().__init__()
        self.conv = nn.Conv2d(dim * 4, dim_out, 1)

    def forward(self, x):
        return self.conv(F.pixel_unshuffle(x, 2))


class Upsample(nn.Module):
    """Nearest-neighbour 2x then a 3x3 conv."""

    def __init__(self, dim, dim_out):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        c = dict(FASHION_MNIST)
        c.update(config)
        self.config = c
        dim = c["dim"]
        init_dim = c["init_dim"] or dim
        dims = [init_dim] + [dim * m for m in c["dim_mults"]]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4

        def block(d_in, d_out):
            if c["block"] == "convnext":
                return ConvNextBlock(d_in, d_out, time_dim, c["convnext_mult"], c["dropout"])
            return ResnetBlock(d_in, d_out, time_dim, c["resnet_groups"], c["dropout"])

        def linear_attention(d):
            return PreNormResidual(d, LinearAttention(d, c["attn_heads"], c["attn_dim_head"]))

        self.init_conv = nn.Conv2d(c["channels"], init_dim, 7, padding=3)
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        # A class-conditional model adds a learned label embedding to the time embedding; row
        # num_classes is "no class" (MindSpore's nn.Embedding starts from N(0, 0.01)).
        self.num_classes = int(c["num_classes"])
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, time_dim)
            nn.init.normal_(self.class_emb.weight, std=0.01)

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                block(d_in, d_in), block(d_in, d_in), linear_attention(d_in),
                nn.Conv2d(d_in, d_out, 3, padding=1) if last else Downsample(d_in, d_out)]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = PreNormResidual(mid, Attention(mid, c["attn_heads"], c["attn_dim_head"]))
        self.mid_block2 = block(mid, mid)
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            self.ups.append(nn.ModuleList([
                block(d_out + d_in, d_out), block(d_out + d_in, d_out), linear_attention(d_out),
                nn.Conv2d(d_out, d_in, 3, padding=1) if last else Upsample(d_out, d_in)]))
        self.final_res_block = block(init_dim * 2, dim)
        self.final_conv = nn.Conv2d(dim, c["channels"], 1)

    def forward(self, x, t, y=None):
        t_emb = self.time_mlp(t)
        if self.num_classes:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            t_emb = t_emb + self.class_emb(y)
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
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), t_emb)
            x = block2(torch.cat((x, skips.pop()), dim=1), t_emb)
            x = up(attn(x))
        x = self.final_res_block(torch.cat((x, r), dim=1), t_emb)
        return self.final_conv(x)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def ms_name_to_torch(name: str) -> str:
    """MindSpore parameter name -> torch state_dict key (GroupNorm gamma/beta -> weight/bias,
    Embedding embedding_table -> weight)."""
    if name.endswith(".embedding_table"):
        return name[: -len("embedding_table")] + "weight"
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def load_ms_weights(net: nn.Module, arrays, prefix: str = "w:") -> None:
    """Load MindSpore weights saved as arrays[prefix + ms_name] (an npz) into `net`, strictly."""
    net.load_state_dict({ms_name_to_torch(k[len(prefix):]): torch.from_numpy(arrays[k]) for k in arrays.files
                         if k.startswith(prefix)}, strict=True)


def ms_weights(net: nn.Module, prefix: str = "w:") -> dict:
    """`net`'s weights as load_ms_weights reads them: {prefix + MindSpore name: float32 array}
    (GroupNorm weight/bias -> gamma/beta, Embedding weight -> embedding_table), for ms_weights_io.py
    to put into a checkpoint."""
    norms = {name for name, m in net.named_modules() if isinstance(m, nn.GroupNorm)}
    tables = {name for name, m in net.named_modules() if isinstance(m, nn.Embedding)}
    out = {}
    for key, value in net.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in norms:
            leaf = {"weight": "gamma", "bias": "beta"}[leaf]
        elif module in tables:
            leaf = "embedding_table"
        out[f"{prefix}{module}.{leaf}"] = value.detach().float().cpu().numpy()
    return out


if __name__ == "__main__":
    for d in (16, 28):
        print(d, count_parameters(UNet(model_config(dim=d))), count_parameters(UNet(model_config(dim=d, num_classes=10))))
