"""Noise schedules: the betas and every constant derived from them.

All constants are computed once in float64 NumPy (cumulative products of 1000 numbers lose
digits in float32) and handed out as float32 tensors by `tensor()`.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np


def linear_betas(timesteps, beta_start=None, beta_end=None):
    """DDPM's linear betas; the defaults (1e-4 .. 0.02 at T = 1000) are scaled by 1000 / T so that
    any T ends at (almost) pure noise."""
    scale = 1000.0 / timesteps
    start = beta_start if beta_start is not None else 1e-4 * scale
    end = beta_end if beta_end is not None else 0.02 * scale
    return np.linspace(start, end, timesteps, dtype=np.float64)


def cosine_betas(timesteps, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal (2021): alpha-bar follows cos^2, betas clipped at `max_beta`."""
    x = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64) / timesteps
    alphas_cumprod = np.cos((x + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, max_beta)


def quadratic_betas(timesteps, beta_start=None, beta_end=None):
    """Betas whose square roots are linear."""
    b = linear_betas(timesteps, beta_start, beta_end)
    return np.linspace(math.sqrt(b[0]), math.sqrt(b[-1]), timesteps, dtype=np.float64) ** 2


def sigmoid_betas(timesteps, beta_start=None, beta_end=None):
    """Betas along a sigmoid from -6 to 6 between start and end."""
    b = linear_betas(timesteps, beta_start, beta_end)
    sig = 1 / (1 + np.exp(-np.linspace(-6, 6, timesteps, dtype=np.float64)))
    return sig * (b[-1] - b[0]) + b[0]


_BETAS = {"linear": linear_betas, "cosine": cosine_betas, "quadratic": quadratic_betas, "sigmoid": sigmoid_betas}


class NoiseSchedule:
    """Betas for t = 0 .. T-1 and their derived constants (float64 NumPy arrays)."""

    def __init__(self, timesteps=1000, schedule="cosine", beta_start=None, beta_end=None):
        if schedule not in _BETAS:
            raise ValueError(f"unknown beta schedule {schedule!r}; choose one of {sorted(_BETAS)}")
        if schedule == "cosine":
            if beta_start is not None or beta_end is not None:
                raise ValueError("the cosine schedule is set by T alone: leave beta_start and beta_end unset")
            betas = cosine_betas(timesteps)
        else:
            betas = _BETAS[schedule](timesteps, beta_start, beta_end)
        if not (np.all(betas > 0) and np.all(betas < 1)):
            raise ValueError(f"betas must lie in (0, 1); got {betas.min():.3g} .. {betas.max():.3g}. With few "
                             "timesteps pass beta_start/beta_end explicitly or use the cosine schedule")
        self.name = schedule
        self.timesteps = int(timesteps)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @classmethod
    def from_config(cls, cfg) -> "NoiseSchedule":
        return cls(cfg.timesteps, cfg.beta_schedule, cfg.beta_start, cfg.beta_end)

    @property
    def terminal_alpha_bar(self) -> float:
        """alpha-bar at t = T: the fraction of signal power left where sampling starts."""
        return float(self.alphas_cumprod[-1])

    def p2_weights(self, gamma: float, k: float = 1.0) -> np.ndarray:
        """Perception-prioritised weights (Choi et al. 2022): (k + SNR(t))^-gamma; ones for gamma = 0."""
        return (k + self.snr) ** -gamma

    def min_snr_weights(self, gamma: float, objective: str = "eps") -> np.ndarray:
        """Min-SNR-gamma weights (Hang et al. 2023): the x0-error weight min(SNR, gamma), expressed
        for the objective's own loss (eps: / SNR, v: / (SNR + 1), x0: as is). Noisy steps keep the
        weight 1 (eps); the nearly clean ones, whose gradients fight the others', count less.
        Ones for gamma = 0."""
        if gamma == 0:
            return np.ones_like(self.snr)
        clipped = np.minimum(self.snr, gamma)
        return {"eps": clipped / self.snr, "v": clipped / (self.snr + 1.0), "x0": clipped}[objective]

    def loss_weights(self, objective: str = "eps", p2_gamma: float = 0.0, p2_k: float = 1.0,
                     min_snr_gamma: float = 0.0) -> np.ndarray:
        """The weight of each timestep's loss: p2 times Min-SNR (each one 1 when off)."""
        return self.p2_weights(p2_gamma, p2_k) * self.min_snr_weights(min_snr_gamma, objective)

    def tensor(self, name: str) -> ms.Tensor:
        """One of the constants as a float32 tensor of shape (T,)."""
        return ms.Tensor(getattr(self, name).astype(np.float32))
