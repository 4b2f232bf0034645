"""Small dataclasses that configure a run, one preset per data set, and their JSON form.

Every run directory holds the `config.json` written by `Config.save`; checkpoints are loaded
with the config saved beside them. A config says what it is (`format_version`); one written by
an older ddpm_ms is migrated when read (`migrate_config`), one from a newer one is refused.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_ms.files import atomic_write

CONFIG_FORMAT = 2  # 1 (no format_version): guidance and the DDPM variance lived in the train section
ARCHS = ("unet", "dit", "ddpm_unet")  # ddpm_ms.models.build_model's backbones
BLOCKS = ("resnet", "convnext")
BETA_SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
OBJECTIVES = ("eps", "x0", "v")
LOSS_TYPES = ("l1", "l2", "huber")
VARIANCES = ("fixed_small", "fixed_large")
DATASETS = ("fashion_mnist", "mnist", "cifar10", "image_folder")
MODES = ("graph", "pynative")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "warmup-constant")
AMP_LEVELS = ("O0", "O1", "O2")
AMP_DTYPES = ("float16", "bfloat16")
SAMPLER_NAMES = ("ddpm", "ddim", "dpm++", "dpm++sde")  # ddpm_ms.sampling.SAMPLERS' keys, for the CLIs


def _size2(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def check_guidance_interval(interval):
    """`interval` as a (lo, hi) pair of ints with 0 <= lo <= hi, or None (guide every step)."""
    if interval is None:
        return None
    try:
        lo, hi = (int(v) for v in interval)
        ok = all(float(v) == int(v) for v in interval) and 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"guidance_interval must be two integer timesteps lo <= hi, both >= 0 (guidance at "
                         f"lo <= t <= hi only), or None (every step), got {interval!r}")
    return lo, hi


@dataclass
class ModelConfig:
    """The denoiser: `arch` picks the backbone (ddpm_ms.models.build_model), the rest its shape.
    `image_size` is (height, width) or one int for square images. num_classes > 0
    makes the model class-conditional on labels 0..num_classes-1, with one more label,
    `num_classes` itself, for "no class" (classifier-free guidance, Ho & Salimans 2022).

    Each backbone reads its own fields. "unet": dim, init_dim, dim_mults, block, resnet_groups,
    convnext_mult, dropout, attn_heads, attn_dim_head. "dit" (Peebles & Xie 2023): patch_size,
    hidden_size, depth (DiT blocks), attn_heads, mlp_ratio. "ddpm_unet" (Ho et al. 2020): dim (the
    paper's ch), dim_mults, num_res_blocks, attn_resolutions (the side lengths, in pixels, of the
    levels with self-attention), attn_heads, dropout, resnet_groups."""
    arch: str = "unet"
    image_size: tuple = (28, 28)
    channels: int = 1
    dim: int = 28
    init_dim: int | None = None
    dim_mults: tuple = (1, 2, 4)
    block: str = "resnet"
    resnet_groups: int = 4
    convnext_mult: int = 2
    dropout: float = 0.0
    attn_heads: int = 4
    attn_dim_head: int = 32
    num_classes: int = 0
    patch_size: int = 2
    hidden_size: int = 64
    depth: int = 3
    mlp_ratio: float = 4.0
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)

    @property
    def out_channels(self) -> int:
        return self.channels

    def validate(self) -> None:
        self.image_size = _size2(self.image_size)
        self.dim_mults = tuple(self.dim_mults)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}, got {self.arch!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if int(self.num_classes) < 0:
            raise ValueError(f"model.num_classes must be >= 0 (0: unconditional), got {self.num_classes}")
        if self.arch == "dit":
            self._validate_dit()
        else:
            self._validate_unet()
        if self.arch == "ddpm_unet":
            self._validate_ddpm_unet()

    def _validate_dit(self) -> None:
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

    def _validate_unet(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"model.block must be one of {BLOCKS}, got {self.block!r}")
        if not self.dim_mults or any(m < 1 for m in self.dim_mults):
            raise ValueError(f"model.dim_mults must be positive integers, got {self.dim_mults}")
        factor = 2 ** (len(self.dim_mults) - 1)
        h, w = self.image_size
        if h % factor or w % factor:
            raise ValueError(
                f"image size {h}x{w} does not divide by 2^(levels-1) = {factor} for dim_mults={self.dim_mults}; "
                f"resize the images to a multiple of {factor} or use fewer levels")
        init_dim = self.init_dim or self.dim
        widths = [init_dim] + [self.dim * m for m in self.dim_mults]
        if (self.block == "resnet" or self.arch == "ddpm_unet") and any(c % self.resnet_groups for c in widths):
            raise ValueError(f"every level width {widths} must divide by resnet_groups={self.resnet_groups}: "
                             f"choose a dim (train.py --dim) that is a multiple of {self.resnet_groups}")


    def _validate_ddpm_unet(self) -> None:
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


@dataclass
class DiffusionConfig:
    """Forward process and training objective. p2_gamma = 0 turns p2 weighting off;
    min_snr_gamma > 0 multiplies in Min-SNR weighting (see NoiseSchedule.loss_weights).
    cond_drop_prob: for a class-conditional model, the share of training images whose label is
    replaced by "no class", so that one network learns both the conditional and the unconditional
    model that classifier-free guidance mixes."""
    timesteps: int = 1000
    beta_schedule: str = "cosine"
    beta_start: float | None = None  # linear/quadratic/sigmoid; default 1e-4 * 1000 / T
    beta_end: float | None = None    # default 0.02 * 1000 / T
    objective: str = "eps"
    loss_type: str = "huber"
    p2_gamma: float = 0.5
    p2_k: float = 1.0
    min_snr_gamma: float = 0.0
    cond_drop_prob: float = 0.1

    def validate(self) -> None:
        if self.timesteps < 2:
            raise ValueError(f"diffusion.timesteps must be at least 2, got {self.timesteps}")
        for name, value, allowed in (("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
                                     ("objective", self.objective, OBJECTIVES),
                                     ("loss_type", self.loss_type, LOSS_TYPES)):
            if value not in allowed:
                raise ValueError(f"diffusion.{name} must be one of {allowed}, got {value!r}")
        if self.p2_gamma < 0 or self.p2_k <= 0:
            raise ValueError(f"p2 weighting needs gamma >= 0 and k > 0, got gamma={self.p2_gamma}, k={self.p2_k}")
        if self.min_snr_gamma < 0:
            raise ValueError(f"diffusion.min_snr_gamma must be >= 0 (0: off), got {self.min_snr_gamma}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"diffusion.cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")


@dataclass
class DataConfig:
    """Where the images come from and how they are prepared. pad: black pixels added on every
    side of Fashion-MNIST / MNIST images (2 makes them 32x32, for a backbone that halves the size
    three times); samples are centre-cropped back before they are scored."""
    dataset: str = "fashion_mnist"
    root: str | None = None  # None: the copy embedded in this repository (data/<dataset>)
    random_flip: bool = True
    num_workers: int = 2
    strict: bool = False     # image_folder: a corrupt file is an error instead of a skipped warning
    pad: int = 0

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if int(self.pad) < 0 or (self.pad and self.dataset not in ("fashion_mnist", "mnist")):
            raise ValueError(f"data.pad must be >= 0 and pads Fashion-MNIST / MNIST only, got {self.pad} for "
                             f"{self.dataset}")


@dataclass
class TrainConfig:
    """Optimisation and what a run writes. `steps` (optimizer updates), when set, overrides
    `epochs`. With grad_accum k each update reads k batches of `batch_size`."""
    batch_size: int = 32
    lr: float = 5e-4
    epochs: int = 3
    steps: int | None = None
    seed: int = 0
    mode: str = "graph"
    device: str = "auto"
    optimizer: str = "adam"      # "adamw": decoupled weight decay
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine | warmup-constant (see training/optim.py)
    warmup_steps: int = 0
    clip_grad: float | None = 1.0  # global gradient norm limit; None: no clipping
    grad_accum: int = 1
    ema_decay: float = 0.9999    # 0: no EMA
    ema_update_every: int = 1
    ema_warmup: bool = True
    amp: str = "O0"              # O0 float32; O1 convs and matmuls in amp_dtype; O2 all but norms/softmax
    amp_dtype: str = "float16"
    loss_scale: float = 2.0 ** 16  # initial dynamic loss scale (float16 only)
    init_from: str | None = None   # checkpoint or run whose weights start this run (fine-tuning)
    save_every: int = 1000       # steps between checkpoints (one is always written at the end)
    keep_last: int = 3           # newest step checkpoints kept (0: all); see checkpoint.py for pinning
    pin_every: int | None = None  # also keep every checkpoint whose step is a multiple of this
    log_every: int = 50          # steps between rows of log.csv
    sample_every: int | None = None  # steps between sample grids; None: once per epoch
    num_samples: int = 16        # images in each grid and in the GIF
    sample_steps: int = 250      # DDPM steps used for grids and the GIF (respaced from T)
    eval_every: int = 0          # steps between FID evaluations while training (0: none); see evaluate.py
    eval_num: int = 1000         # images drawn for each evaluation (FID is comparable at equal counts only)
    eval_sampler: str = "dpm++"
    eval_steps: int = 20

    def validate(self) -> None:
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "save_every": self.save_every,
                    "log_every": self.log_every, "num_samples": self.num_samples, "sample_steps": self.sample_steps}
        positive.update(grad_accum=self.grad_accum, ema_update_every=self.ema_update_every)
        if self.steps is not None:
            positive["steps"] = self.steps
        if self.pin_every is not None:
            positive["pin_every"] = self.pin_every
        if self.sample_every is not None:
            positive["sample_every"] = self.sample_every
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if int(self.seed) < 0:
            raise ValueError(f"train.seed must be a non-negative integer, got {self.seed}")
        if self.mode not in MODES:
            raise ValueError(f"train.mode must be one of {MODES}, got {self.mode!r}")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("amp", self.amp, AMP_LEVELS), ("amp_dtype", self.amp_dtype, AMP_DTYPES),
                                     ("eval_sampler", self.eval_sampler, SAMPLER_NAMES)):
            if value not in allowed:
                raise ValueError(f"train.{name} must be one of {allowed}, got {value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if int(self.warmup_steps) < 0 or int(self.keep_last) < 0:
            raise ValueError(f"train.warmup_steps and train.keep_last must be >= 0, got "
                             f"{self.warmup_steps} and {self.keep_last}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"train.clip_grad must be positive (or None for no clipping), got {self.clip_grad}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1) (0 turns EMA off), got {self.ema_decay}")
        if not self.loss_scale >= 1:
            raise ValueError(f"train.loss_scale must be >= 1, got {self.loss_scale}")
        if int(self.eval_every) < 0 or int(self.eval_steps) < 1:
            raise ValueError(f"train.eval_every must be >= 0 and train.eval_steps >= 1, got {self.eval_every} "
                             f"and {self.eval_steps}")
        if int(self.eval_num) < 4:
            raise ValueError(f"train.eval_num must be at least 4 (precision and recall use 3 nearest "
                             f"neighbours), got {self.eval_num}")


@dataclass
class SamplingConfig:
    """How a trained model is sampled by default: the pipeline's call, sample.py and evaluate.py
    start from these (their arguments override them). sampler: a ddpm_ms.sampling.SAMPLERS name;
    steps: model calls (None: the sampler's own default, 20 for DPM-Solver++).
    guidance_scale: classifier-free guidance weight w of a class-conditional model,
    out = uncond + w (cond - uncond); 1: no guidance. guidance_rescale: its over-exposure fix
    (Lin et al. 2024; diffusers' guidance_rescale), 0 off, 1 full. guidance_interval (lo, hi): guide
    only the steps at timesteps lo <= t <= hi, the conditional model alone elsewhere (Kynkaenniemi
    et al. 2024); None: every step. variance: DDPM's posterior variance (fixed_small: beta-tilde)."""
    sampler: str = "dpm++"
    steps: int | None = None
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0
    guidance_interval: tuple | None = None
    variance: str = "fixed_small"

    def validate(self) -> None:
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"sampling.sampler must be one of {SAMPLER_NAMES}, got {self.sampler!r}")
        if self.steps is not None and int(self.steps) < 1:
            raise ValueError(f"sampling.steps must be a positive integer or None (the sampler's default), "
                             f"got {self.steps}")
        if self.variance not in VARIANCES:
            raise ValueError(f"sampling.variance must be one of {VARIANCES}, got {self.variance!r}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"sampling.guidance_scale must be >= 0 (1: no guidance), got {self.guidance_scale}")
        if not 0 <= self.guidance_rescale <= 1:
            raise ValueError(f"sampling.guidance_rescale must be in [0, 1] (0: off), got {self.guidance_rescale}")
        try:
            self.guidance_interval = check_guidance_interval(self.guidance_interval)
        except ValueError as e:
            raise ValueError(f"sampling.{e}") from None

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1 or bool(self.guidance_rescale) or self.guidance_interval is not None


# Settings that moved between sections, by config format: {format: {(old section, key): new section}}.
_MOVED = {2: {("train", "guidance_scale"): "sampling", ("train", "guidance_rescale"): "sampling",
              ("train", "guidance_interval"): "sampling", ("train", "variance"): "sampling"}}


def migrate_config(d: dict, source: str = "config") -> dict:
    """A config dict of any known format as the current one (a new dict). A newer format than
    this code knows is an error naming `source` and the fix."""
    version = int(d.get("format_version", 1))
    if version > CONFIG_FORMAT:
        raise ValueError(f"{source} has config format_version {version}, newer than this ddpm_ms knows "
                         f"({CONFIG_FORMAT}): upgrade ddpm_ms (pip install -U ddpm_ms) to read it")
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for target in range(version + 1, CONFIG_FORMAT + 1):
        for (section, key), new_section in _MOVED.get(target, {}).items():
            if key in d.get(section, {}):
                d.setdefault(new_section, {})[key] = d[section].pop(key)
    d["format_version"] = CONFIG_FORMAT
    return d


@dataclass
class Config:
    preset: str
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    SECTIONS = {"model": ModelConfig, "diffusion": DiffusionConfig, "data": DataConfig, "train": TrainConfig,
                "sampling": SamplingConfig}

    def validate(self) -> "Config":
        for part in (self.model, self.diffusion, self.data, self.train, self.sampling):
            part.validate()
        if self.train.eval_every and self.train.eval_steps > self.diffusion.timesteps:
            raise ValueError(f"train.eval_steps ({self.train.eval_steps}) cannot exceed "
                             f"diffusion.timesteps ({self.diffusion.timesteps})")
        if self.model.num_classes and self.data.dataset == "image_folder":
            raise ValueError("an image folder has no class labels, so the model cannot be class-conditional: "
                             "set model.num_classes to 0")
        t = self.sampling
        if not self.model.num_classes and t.guided:
            raise ValueError(f"sampling.guidance_scale is {t.guidance_scale:g}, guidance_rescale "
                             f"{t.guidance_rescale:g} and guidance_interval {t.guidance_interval}, but guidance "
                             "needs a class-conditional model (model.num_classes > 0): set --num-classes, or "
                             "--guidance-scale 1 --guidance-rescale 0 --guidance-interval all")
        if self.train.sample_steps > self.diffusion.timesteps:
            raise ValueError(f"train.sample_steps ({self.train.sample_steps}) cannot exceed "
                             f"diffusion.timesteps ({self.diffusion.timesteps})")
        if self.sampling.steps is not None and self.sampling.steps > self.diffusion.timesteps:
            raise ValueError(f"sampling.steps ({self.sampling.steps}) cannot exceed "
                             f"diffusion.timesteps ({self.diffusion.timesteps})")
        return self

    def to_dict(self) -> dict:
        return {"format_version": CONFIG_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        """The config of a dict in any known format (see `migrate_config`)."""
        d = migrate_config(d, source)
        unknown = set(d) - set(cls.SECTIONS) - {"preset", "format_version"}
        if unknown:
            raise ValueError(f"{source} has unknown sections {sorted(unknown)}")
        kwargs = {"preset": d.get("preset", "custom")}
        for name, klass in cls.SECTIONS.items():
            known = {f.name for f in dataclasses.fields(klass)}
            given = d.get(name, {})
            unknown = set(given) - known
            if unknown:
                raise ValueError(f"{source}: section {name!r} has unknown keys {sorted(unknown)}")
            kwargs[name] = klass(**given)
        cfg = cls(**kwargs)
        cfg.model.image_size = _size2(cfg.model.image_size)
        cfg.model.dim_mults = tuple(cfg.model.dim_mults)
        cfg.model.attn_resolutions = tuple(cfg.model.attn_resolutions)
        return cfg.validate()

    def save(self, path) -> None:
        """Write JSON atomically: a reader never sees half a file."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path) -> "Config":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config at {path}: a run directory holds the config.json written by training")
        try:
            d = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); it may be cut short: restore it from the run's "
                             "checkpoints (each holds its config)") from None
        return cls.from_dict(d, source=str(path))


def _fashion_like(name: str) -> Config:
    # The recipe chosen for Fashion-MNIST within a 2-hour budget on a 2-core CPU (the study and its
    # figures: docs/experiments/recipe_search.md): 7,500 updates of batch 32, a 500-step warm-up to
    # 2e-3 and a cosine decay to 0, an EMA of 0.995 updated every 10 steps, class labels with
    # classifier-free guidance at w = 2 on the steps at t <= 700 only (Kynkaenniemi et al. 2024), and
    # no flips (every shoe in Fashion-MNIST points the same way; a mirrored digit is not a digit).
    # On an accelerator, train longer: --steps 30000.
    return Config(preset=name,
                  model=ModelConfig(image_size=(28, 28), channels=1, dim=16, dim_mults=(1, 2, 4), num_classes=10),
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
    cfg.model = ModelConfig(arch="dit", image_size=(28, 28), channels=1, patch_size=4, hidden_size=64,
                            depth=3, attn_heads=4, mlp_ratio=4.0, num_classes=10)
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
    cfg.model = ModelConfig(arch="ddpm_unet", image_size=(32, 32), channels=1, dim=32, dim_mults=(1, 2, 2, 2),
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
        model=ModelConfig(arch="ddpm_unet", image_size=(32, 32), channels=3, dim=128, dim_mults=(1, 2, 2, 2),
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
    "dit_fashion_mnist": lambda: _dit_like("dit_fashion_mnist", "fashion_mnist"),
    "dit_mnist": lambda: _dit_like("dit_mnist", "mnist"),
    "ddpm_unet_fashion_mnist": lambda: _ddpm_unet_fashion("ddpm_unet_fashion_mnist"),
    "cifar10": _cifar10,
    "cifar10_cond": _cifar10_cond,
    "cats": lambda: Config(
        preset="cats",
        model=ModelConfig(image_size=(64, 64), channels=3, dim=32, dim_mults=(1, 2, 4, 8)),
        diffusion=DiffusionConfig(timesteps=1000, beta_schedule="cosine", loss_type="huber",
                                  p2_gamma=0.5, p2_k=1.0),
        data=DataConfig(dataset="image_folder", random_flip=True),
        train=TrainConfig(batch_size=8, lr=2e-4, epochs=1, steps=2000, save_every=500, sample_every=500,
                          num_samples=8)),
}


def preset(name: str) -> Config:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name]()).validate()
