"""The presets: one config per data set and backbone, the starting points of train.py (`--preset`).

The first preset of each backbone, in the order of `PRESETS`, is its reference preset
(`reference_preset`): the one the op audit (scripts/check_ops.py) compiles and bench.py measures.
"""
from __future__ import annotations

import copy

from ddpm_ms.config import Config, DataConfig, DiffusionConfig, SamplingConfig, TrainConfig
from ddpm_ms.models import DDPMUNetConfig, DiTConfig, UNetConfig

DEFAULT_PRESET = "fashion_mnist"


def _fashion_like(name: str) -> Config:
    # The recipe chosen for Fashion-MNIST within a 2-hour budget on a 2-core CPU (the study and its
    # figures: docs/experiments/recipe_search.md): 7,500 updates of batch 32, a 500-step warm-up to
    # 2e-3 and a cosine decay to 0, an EMA of 0.995 updated every 10 steps, class labels with
    # classifier-free guidance at w = 2 on the steps at t <= 700 only (Kynkaenniemi et al. 2024), and
    # no flips (every shoe in Fashion-MNIST points the same way; a mirrored digit is not a digit).
    # On an accelerator, train longer: --steps 30000.
    return Config(preset=name,
                  model=UNetConfig(image_size=(28, 28), channels=1, dim=16, dim_mults=(1, 2, 4), num_classes=10),
                  diffusion=DiffusionConfig(timesteps=1000, beta_schedule="cosine", loss_type="huber",
                                            p2_gamma=0.5, p2_k=1.0),
                  data=DataConfig(dataset=name, random_flip=False),
                  train=TrainConfig(batch_size=32, lr=2e-3, lr_schedule="cosine", warmup_steps=500,
                                    epochs=4, steps=7500, sample_every=2500, num_samples=20,
                                    ema_decay=0.995, ema_update_every=10),
                  sampling=SamplingConfig(sampler="dpm++", guidance_scale=2.0, guidance_interval=(0, 700)))


def _dit_like(name: str, dataset: str) -> Config:
    # The U-Net preset's diffusion, data and sampling, with a DiT (Peebles & Xie 2023) as the
    # denoiser: patch 4 (7 x 7 tokens), width 64, 3 blocks of 4 heads (the MNIST DiT of issue 39).
    # Its updates are much cheaper than the U-Net's, so it takes batches of 128 and as many updates
    # as fit in the U-Net preset's training time on a 2-core CPU (how they were counted:
    # docs/experiments/dit.md). AdamW at 1e-3 after the same warm-up, cosine decay to 0.
    cfg = _fashion_like(dataset)
    cfg.preset = name
    cfg.model = DiTConfig(image_size=(28, 28), channels=1, patch_size=4, hidden_size=64, depth=3,
                           attn_heads=4, mlp_ratio=4.0, num_classes=10)
    t = cfg.train
    t.lr, t.optimizer, t.batch_size, t.steps, t.epochs, t.sample_every = 1e-3, "adamw", 128, 32500, 70, 5000
    return cfg


def _ddpm_unet_fashion(name: str) -> Config:
    # The default preset's diffusion, labels, guidance, optimiser and length, with the DDPM paper's
    # U-Net at a quarter of its width (ch 32, mults (1, 2, 2, 2), 2 blocks, attention at 16x16,
    # no dropout) as the denoiser. The paper's U-Net halves the size three times, so the
    # 28x28 images are padded to 32x32 (data.pad); samples are cropped back to 28x28 when scored.
    # It answers "does the architecture learn?" at equal training time (docs/experiments/ddpm_unet.md).
    cfg = _fashion_like("fashion_mnist")
    cfg.preset = name
    cfg.model = DDPMUNetConfig(image_size=(32, 32), channels=1, dim=32, dim_mults=(1, 2, 2, 2),
                               num_res_blocks=2, attn_resolutions=(16,), attn_heads=1, resnet_groups=32,
                            dropout=0.0, num_classes=10)
    cfg.data.pad = 2
    # As many updates as fit in the default preset's 65 minutes on a 2-core CPU (34 images/s at batch 32).
    cfg.train.steps, cfg.train.epochs = 4100, 3
    # Deterministic samplers (DDIM, DPM-Solver++) leave grain in this model's images that the
    # stochastic ones remove; its default is the SDE form (docs/experiments/ddpm_unet.md).
    cfg.sampling.sampler = cfg.train.eval_sampler = "dpm++sde"
    return cfg


def _cifar10() -> Config:
    # Ho et al. 2020 (DDPM), CIFAR-10: the 35.7M-parameter U-Net (ch 128, mults (1, 2, 2, 2), 2 blocks,
    # attention at 16x16, dropout 0.1), T = 1000 linear betas 1e-4..0.02, epsilon and a plain MSE,
    # Adam at 2e-4 after 5,000 warm-up steps, then constant, gradient clipping at 1, EMA 0.9999,
    # batch 128, random horizontal flips, 800k steps; ancestral sampling with sigma^2 = beta
    # ("fixed_large"), 1000 steps. Unconditional.
    return Config(
        preset="cifar10",
        model=DDPMUNetConfig(image_size=(32, 32), channels=3, dim=128, dim_mults=(1, 2, 2, 2),
                             num_res_blocks=2, attn_resolutions=(16,), attn_heads=1, resnet_groups=32, dropout=0.1),
        diffusion=DiffusionConfig(timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  objective="eps", loss_type="l2", p2_gamma=0.0),
        data=DataConfig(dataset="cifar10", random_flip=True),
        train=TrainConfig(batch_size=128, lr=2e-4, lr_schedule="warmup-constant", warmup_steps=5000,
                          steps=800_000, epochs=2048, clip_grad=1.0, ema_decay=0.9999, ema_update_every=1,
                          ema_warmup=False, save_every=5000, sample_every=10_000, num_samples=64,
                          sample_steps=1000),
        sampling=SamplingConfig(sampler="ddpm", steps=1000, variance="fixed_large"))


def _cifar10_cond() -> Config:
    # The conditional reproduction of zoubohao/DenoisingDiffusionProbabilityModel-ddpm-
    # (DiffusionFreeGuidence, MainCondition.py): T = 500 linear betas 1e-4..0.028, ch 128, mults
    # (1, 2, 2, 2), 2 blocks, dropout 0.15, labels with 10% dropped for classifier-free guidance,
    # AdamW (weight decay 1e-4) warmed up over 7 of 70 epochs to 2.5e-4 (lr 1e-4 x multiplier 2.5),
    # then a cosine to 0, gradient clipping at 1, batch 80 (625 updates an epoch), no EMA; 500
    # ancestral steps with sigma^2 = beta and guidance w = 1.8 in its (1 + w) eps_c - w eps_u, which is
    # w = 2.8 in ddpm_ms's eps_u + w (eps_c - eps_u). The backbone is ddpm_ms's DDPM-paper U-Net
    # (attention at 16x16, the label embedded into the time embedding), not that repository's
    # attention-in-every-block variant.
    cfg = _cifar10()
    cfg.preset = "cifar10_cond"
    cfg.model.dropout, cfg.model.num_classes = 0.15, 10
    cfg.diffusion = DiffusionConfig(timesteps=500, beta_schedule="linear", beta_start=1e-4, beta_end=0.028,
                                    objective="eps", loss_type="l2", p2_gamma=0.0, cond_drop_prob=0.1)
    t = cfg.train
    t.batch_size, t.lr, t.optimizer, t.weight_decay = 80, 2.5e-4, "adamw", 1e-4
    t.lr_schedule, t.warmup_steps, t.steps, t.epochs, t.ema_decay = "cosine", 4375, 43_750, 70, 0.0
    t.sample_steps, t.num_samples = 500, 80
    cfg.sampling = SamplingConfig(sampler="ddpm", steps=500, variance="fixed_large", guidance_scale=2.8)
    return cfg


PRESETS = {
    "fashion_mnist": lambda: _fashion_like("fashion_mnist"),
    "mnist": lambda: _fashion_like("mnist"),
    "cats": lambda: Config(
        preset="cats",
        model=UNetConfig(image_size=(64, 64), channels=3, dim=32, dim_mults=(1, 2, 4, 8)),
        diffusion=DiffusionConfig(timesteps=1000, beta_schedule="cosine", loss_type="huber",
                                  p2_gamma=0.5, p2_k=1.0),
        data=DataConfig(dataset="image_folder", random_flip=True),
        train=TrainConfig(batch_size=8, lr=2e-4, epochs=1, steps=2000, save_every=500, sample_every=500,
                          num_samples=8)),
    "dit_mnist": lambda: _dit_like("dit_mnist", "mnist"),
    "dit_fashion_mnist": lambda: _dit_like("dit_fashion_mnist", "fashion_mnist"),
    "cifar10_cond": _cifar10_cond,
    "cifar10": _cifar10,
    "ddpm_unet_fashion_mnist": lambda: _ddpm_unet_fashion("ddpm_unet_fashion_mnist"),
}


def preset(name: str) -> Config:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name]()).validate()


def reference_preset(arch: str) -> str:
    """The first preset of backbone `arch` (see the module's docstring)."""
    for name, make in PRESETS.items():
        if make().model.arch == arch:
            return name
    raise ValueError(f"no preset uses the {arch} backbone; give a config (--config) instead")
