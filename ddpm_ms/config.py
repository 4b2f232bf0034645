"""Small dataclasses that configure a run, one preset per data set, and their JSON form.

Every run directory holds the `config.json` written by `Config.save`; checkpoints are loaded
with the config saved beside them. A config says what it is (`format_version`); one written by
an older ddpm_ms is migrated when read (`migrate_config`), one from a newer one is refused.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ddpm_ms.files import atomic_write
from ddpm_ms.registry import BACKBONES, DATASETS, SAMPLERS

# 1 (no format_version): guidance and the DDPM variance lived in the train section;
# 2: one flat model section held every backbone's fields; 3: only the backbone's own.
CONFIG_FORMAT = 3
BETA_SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
OBJECTIVES = ("eps", "x0", "v")
LOSS_TYPES = ("l1", "l2", "huber")
VARIANCES = ("fixed_small", "fixed_large")
MODES = ("graph", "pynative")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "warmup-constant")
AMP_LEVELS = ("O0", "O1", "O2")
AMP_DTYPES = ("float16", "bfloat16")


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
    """What every denoiser shares; each backbone's config class (ddpm_ms.models: UNetConfig, DiTConfig,
    DDPMUNetConfig) adds its own fields, defaults and checks, and `backbone_config(arch, ...)` builds the
    one `arch` names. `image_size` is (height, width) or one int for square images. num_classes > 0
    makes the model class-conditional on labels 0..num_classes-1, with one more label,
    `num_classes` itself, for "no class" (classifier-free guidance, Ho & Salimans 2022)."""
    arch: str = ""
    flags: ClassVar[dict] = {}  # {"--flag": (field, help)}: the command-line flags that size this backbone
    image_size: tuple = (28, 28)
    channels: int = 1
    num_classes: int = 0

    def __post_init__(self):
        if type(self) is ModelConfig:
            raise TypeError("ModelConfig holds what every backbone shares: build a backbone's own config "
                            "(UNetConfig, DiTConfig, ...) or backbone_config(arch, **fields)")

    @property
    def out_channels(self) -> int:
        return self.channels

    def validate(self) -> None:
        """Checks of the shared fields; a backbone's config extends it with its own."""
        self.image_size = _size2(self.image_size)
        BACKBONES.check(self.arch, "model.arch")
        if type(self) is not BACKBONES[self.arch].config:
            raise ValueError(f"model.arch is {self.arch!r} but the config is a {type(self).__name__}; build it "
                             f"with backbone_config({self.arch!r}, ...)")
        if int(self.channels) < 1:
            raise ValueError(f"model.channels must be >= 1, got {self.channels}")
        if int(self.num_classes) < 0:
            raise ValueError(f"model.num_classes must be >= 0 (0: unconditional), got {self.num_classes}")


def backbone_config(arch: str, **fields) -> ModelConfig:
    """The config of backbone `arch` (a ddpm_ms.registry.BACKBONES name) with `fields` set; a field
    that backbone does not have is an error naming it."""
    klass = BACKBONES[arch].config
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"the {arch} backbone has no field(s) {unknown}; its fields: {sorted(known - {'arch'})}")
    fields.pop("arch", None)
    return klass(**fields)


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
    """Where the images come from and how they are prepared. dataset: a ddpm_ms.registry.DATASETS
    name. pad: black pixels added on every side of a data set's fixed-size images (2 makes
    Fashion-MNIST 32x32, for a backbone that halves the size three times); samples are
    centre-cropped back before they are scored."""
    dataset: str = "fashion_mnist"
    root: str | None = None  # None: the data set's folder under the data root (ddpm_ms.data.paths)
    random_flip: bool = True
    num_workers: int = 2
    strict: bool = False     # image_folder: a corrupt file is an error instead of a skipped warning
    pad: int = 0

    def validate(self) -> None:
        DATASETS.check(self.dataset, "data.dataset")
        if int(self.pad) < 0 or (self.pad and DATASETS[self.dataset].image_shape is None):
            raise ValueError(f"data.pad must be >= 0 and pads data sets of one image size only (not {self.dataset}, "
                             f"whose images are resized to the model's), got {self.pad}")


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
                                     ("eval_sampler", self.eval_sampler, SAMPLERS.names())):
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
    start from these (their arguments override them). sampler: a ddpm_ms.registry.SAMPLERS name;
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
        SAMPLERS.check(self.sampler, "sampling.sampler")
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
# Format 2's one flat model section: the fields of every backbone, of which format 3 keeps the backbone's own.
FLAT_MODEL_FIELDS = ("arch", "image_size", "channels", "dim", "init_dim", "dim_mults", "block", "resnet_groups",
                     "convnext_mult", "dropout", "attn_heads", "attn_dim_head", "num_classes", "patch_size",
                     "hidden_size", "depth", "mlp_ratio", "num_res_blocks", "attn_resolutions")


def own_model_fields(model: dict) -> dict:
    """A flat (format 2) model section as its backbone's own fields: the other backbones' are dropped,
    and anything else is kept for the config class to refuse."""
    own = {f.name for f in dataclasses.fields(BACKBONES[model.get("arch", "unet")].config)}
    return {k: v for k, v in model.items() if k in own or k not in FLAT_MODEL_FIELDS}


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
    if version < 3 and isinstance(d.get("model"), dict):
        d["model"] = own_model_fields(d["model"])
    d["format_version"] = CONFIG_FORMAT
    return d


@dataclass
class Config:
    preset: str
    model: ModelConfig = field(default_factory=lambda: backbone_config("unet"))
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
        if self.model.num_classes and not DATASETS[self.data.dataset].class_names:
            raise ValueError(f"{self.data.dataset} has no class labels, so the model cannot be class-conditional: "
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
            given = d.get(name, {})
            if name == "model":  # the backbone's own config class
                arch = given.get("arch", "unet")
                try:
                    klass = BACKBONES[arch].config
                except ValueError as e:
                    raise ValueError(f"{source}: model.arch: {e}") from None
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = set(given) - known
            if unknown:
                raise ValueError(f"{source}: section {name!r} has unknown keys {sorted(unknown)}")
            kwargs[name] = klass(**given)
        return cls(**kwargs).validate()

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
