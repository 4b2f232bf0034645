"""The PyTorch twin of ddpm_ms's diffusion recipe and samplers, NumPy and PyTorch only (no MindSpore):
IDX reading, the cosine schedule (bench_torch.py), the loss weights (p2, Min-SNR), the learning-rate
schedule, the leading and trailing timestep grids, DPM-Solver++ 2M (ODE and SDE), DDPM ancestral
sampling and classifier-free guidance with an interval, named as research/recipe_search.py names its
samplers (parse_sampler). check_train_step.py and check_sampler.py check them against ddpm_ms;
research/recipe_search.py (the GPU proxy of the recipe search) trains and samples with them.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import cosine_schedule as cosine_alphas_cumprod  # noqa: E402  (ddpm_ms's cosine schedule)

__all__ = ["EpsFromV", "cosine_alphas_cumprod", "ddpm_ancestral", "dpm_solver_pp", "guided_eps", "loss_weights", "lr_at",
           "parse_sampler", "read_idx_images", "read_idx_labels", "timestep_grid"]


def read_idx_images(path: str) -> np.ndarray:
    """ddpm_ms.data's read_idx without MindSpore (ddpm_ms.data imports mindspore.dataset)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


def read_idx_labels(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=8)


def loss_weights(ab: np.ndarray, r: dict) -> np.ndarray:
    snr = ab / (1.0 - ab)
    w = (1.0 + snr) ** -r["p2_gamma"]
    if r["min_snr_gamma"] > 0:  # NoiseSchedule.min_snr_weights, for the recipe's objective
        w = w * np.minimum(snr, r["min_snr_gamma"]) / (snr + 1.0 if r["objective"] == "v" else snr)
    return w


def lr_at(step: int, r: dict) -> float:
    """WarmupSchedule.at of ddpm_ms.training.optim."""
    lr = r["lr"] * min((step + 1) / max(1, r["warmup"]), 1.0)
    if r["lr_schedule"] == "cosine":
        progress = min(max((step - r["warmup"]) / max(1, r["steps"] - r["warmup"]), 0.0), 1.0)
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def timestep_grid(T: int, n: int, trailing: bool) -> np.ndarray:
    """ddpm_ms.sampling.base.spaced_timesteps, descending: leading or trailing."""
    if trailing:
        return (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1)
    return np.unique(np.floor(np.arange(n) * (T / n)).astype(np.int64))[::-1]


def dpm_solver_pp(model, shape, ab: np.ndarray, n_steps: int, sde: bool, gen, device, x_T=None, trailing=False):
    """ddpm_ms.sampling.DPMSolverMultistepScheduler, order 2, lower_order_final, on the leading
    (or trailing) grid; from x_T when given, else from noise drawn with `gen`. model(x, t) takes
    an int t (guided_eps makes one of a network)."""
    import torch
    T = len(ab)
    ts = timestep_grid(T, n_steps, trailing)

    def als(t):
        a_bar = 1.0 if t < 0 else float(ab[t])
        alpha, sigma = math.sqrt(a_bar), math.sqrt(1.0 - a_bar)
        return alpha, sigma, (math.log(alpha) - math.log(sigma)) if sigma > 0 else math.inf

    x = torch.randn(shape, generator=gen, device=device) if x_T is None else x_T
    last = None
    n = len(ts)
    for i, t in enumerate(ts):
        t = int(t)
        prev = int(ts[i + 1]) if i + 1 < n else -1
        eps = model(x, t)
        a_s, s_s, l_s = als(t)
        x0 = ((x - s_s * eps) / a_s).clamp(-1, 1)
        order = 1 if (i == 0 or i == n - 1 or (i == n - 2 and (n < 15 or ts[-1] == 0))) else 2
        if prev < 0:
            x = x0
        else:
            a_t, s_t, l_t = als(prev)
            h = l_t - l_s
            decay = math.exp(-h) if sde else 1.0
            phi = a_t * math.expm1(-2.0 * h if sde else -h)
            out = (s_t / s_s) * decay * x - phi * x0
            if order == 2:
                r_ = (l_s - als(last[0])[2]) / h
                out = out - (0.5 * phi / r_) * (x0 - last[1])
            if sde:
                out = out + s_t * math.sqrt(-math.expm1(-2.0 * h)) * torch.randn(shape, generator=gen, device=device)
            x = out
        last = (t, x0)
    return x


def ddpm_ancestral(model, shape, ab: np.ndarray, gen, device):
    """ddpm_ms.sampling.DDPMScheduler over all T steps: fixed_small variance, x0 clipped."""
    import torch
    x = torch.randn(shape, generator=gen, device=device)
    for t in range(len(ab) - 1, -1, -1):
        eps = model(x, t)
        ab_t, ab_prev = float(ab[t]), (float(ab[t - 1]) if t > 0 else 1.0)
        beta = 1.0 - ab_t / ab_prev
        x0 = ((x - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)).clamp(-1, 1)
        x = (math.sqrt(ab_prev) * beta / (1.0 - ab_t)) * x0 + (math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)) * x
        if t > 0:
            x = x + math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * beta) * torch.randn(shape, generator=gen, device=device)
    return x


SAMPLER_RE = re.compile(r"^(dpmpp|dpmpp_sde|ddpm)(\d+)(tr)?((?:-[wi][0-9._]+)*)$")


def parse_sampler(name: str) -> dict:
    """A sampler name: KIND STEPS [tr] [-wW] [-iLO_HI].

    KIND: dpmpp (DPM-Solver++ 2M), dpmpp_sde (its SDE form) or ddpm (ancestral, all 1,000 steps);
    tr: the trailing grid (else leading); -wW: classifier-free guidance at w = W (class-conditional
    models; default 1, the conditional model alone); -iLO_HI: guidance only at timesteps LO <= t <= HI
    (Kynkaenniemi et al. 2024), the conditional model alone elsewhere.
    E.g. dpmpp20 (the unconditional rows), dpmpp20tr-w1.25 (the preset's), dpmpp20tr-w2-i200_800."""
    m = SAMPLER_RE.match(name)
    if not m:
        raise ValueError(f"bad sampler name {name!r}: KIND STEPS [tr] [-wW] [-iLO_HI], e.g. dpmpp20tr-w1.25")
    spec = dict(kind=m.group(1), steps=int(m.group(2)), trailing=bool(m.group(3)), w=1.0, lo=0, hi=10 ** 9)
    for mod in filter(None, m.group(4).split("-")):
        if mod[0] == "w":
            spec["w"] = float(mod[1:])
        else:
            lo, _, hi = mod[1:].partition("_")
            spec["lo"], spec["hi"] = int(lo), int(hi)
    if spec["kind"] == "ddpm" and spec["steps"] != 1000:
        raise ValueError(f"{name}: ddpm runs all 1,000 steps (ddpm1000)")
    return spec


def guided_eps(model, spec: dict, labels):
    """model as eps(x, int t): unconditional when labels is None; else with the labels, mixed with
    "no class" at w = spec["w"] where spec's interval holds t (ddpm_ms.sampling.loop)."""
    import torch

    def eps(x, t):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if labels is None:
            return model(x, tt)
        if spec["w"] == 1.0 or not spec["lo"] <= t <= spec["hi"]:
            return model(x, tt, labels)
        null = torch.full_like(labels, model.num_classes)
        cond, uncond = model(torch.cat((x, x)), torch.cat((tt, tt)), torch.cat((labels, null))).chunk(2)
        return uncond + spec["w"] * (cond - uncond)
    return eps


class EpsFromV:
    """A v-predicting network seen as an eps-predicting one, for the samplers."""

    def __init__(self, model, sqrt_ab, sqrt_1mab):
        self.model, self.sqrt_ab, self.sqrt_1mab = model, sqrt_ab, sqrt_1mab
        self.num_classes = getattr(model, "num_classes", 0)

    def __call__(self, x, t, y=None):
        v = self.model(x, t) if y is None else self.model(x, t, y)
        return self.sqrt_ab[t][:, None, None, None] * v + self.sqrt_1mab[t][:, None, None, None] * x
