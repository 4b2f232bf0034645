"""DiffusionPipeline: a trained denoiser, its noise schedule and its sampling defaults in one object.

    pipe = DiffusionPipeline.from_pretrained(DEFAULT_PRETRAINED)  # the shipped model, or a directory
    out = pipe(num_images=20, class_labels="sneaker", seed=0)      # DPM-Solver++ 20, guided as trained
    viz.save_grid(out.images, "sneakers.png")
    edited = pipe.img2img("shoe.png", strength=0.6)(num_images=8)  # the same model, from an image
    pipe.save_pretrained("my_model")                               # weights + configs + model card

It is the one place that turns a model into images: sample.py, evaluate.py, the trainer's grids
and evaluations, the notebook and the benchmarks all call it. `from_pretrained` reads a pipeline
directory (ddpm_ms/pipeline/directory.py), a training run directory (its config.json and newest
checkpoint) or one checkpoint of a run; `save_pretrained` writes a pipeline directory that needs
nothing else to sample.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddpm_ms import checkpoint as ckpt_io
from ddpm_ms.config import Config, DiffusionConfig, ModelConfig, SamplingConfig
from ddpm_ms.data.datasets import class_names
from ddpm_ms.models import build_model, count_parameters
from ddpm_ms.pipeline import directory
from ddpm_ms.pipeline.card import render_card
from ddpm_ms.pipeline.mindir import MINDIR, MindIRDenoiser
from ddpm_ms.presets import DEFAULT_PRESET
from ddpm_ms.sampling import ClassifierFreeGuidance, Img2Img, Inpaint, balanced_labels, sample, scheduler_for
from ddpm_ms.sampling.editing import read_image
from ddpm_ms.sampling.loop import split_guidance

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_PRETRAINED = DEFAULT_PRESET  # the shipped pipeline: the default preset's trained weights


@dataclass
class PipelineOutput:
    """images: float32 (N, C, H, W) in [-1, 1]; labels: the class each image was drawn for (None for an
    unconditional model; "no class" is label num_classes); trajectory: Frames of the first batch
    (ddpm_ms.sampling.Frame), empty unless asked for; timesteps: the grid the sampler visited."""
    images: np.ndarray
    labels: np.ndarray | None
    trajectory: list
    timesteps: np.ndarray


def shipped_pipelines() -> list[str]:
    """Names of the pipelines shipped inside the package (from_pretrained takes them)."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if directory.is_pipeline_dir(p)) if PRETRAINED_DIR.is_dir() else []


class DiffusionPipeline:
    """model: the denoiser (an nn.Cell built by ddpm_ms.models.build_model from `model_config`);
    diffusion: its noise schedule and prediction target; sampling: the defaults of `__call__`;
    dataset and class_names: what it learnt (class names let labels be given by name).
    source, checkpoint, checkpoint_step, loaded_weights: where the weights came from; card: the
    model card's text (README.md of a pipeline directory). jit: compile the model's forward pass
    (ms.jit) when sampling; False runs it op by op, for debugging. edit: the image-to-image or
    inpainting input of a pipeline made by `img2img` or `inpaint` (None: generation)."""

    def __init__(self, model, model_config: ModelConfig, diffusion: DiffusionConfig,
                 sampling: SamplingConfig | None = None, dataset: str | None = None, class_names=None,
                 card: str = "", source: str | None = None):
        self.model, self.model_config, self.diffusion = model, model_config, diffusion
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.dataset = dataset
        self.class_names = list(class_names) if class_names else _default_class_names(dataset, model_config)
        self.card, self.source = card, source
        self.checkpoint, self.checkpoint_step, self.loaded_weights, self.preset = None, None, None, None
        self.jit, self.edit = True, None
        self.model.set_train(False)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Config, model, **kwargs) -> "DiffusionPipeline":
        """A pipeline over `model` (already holding its weights) trained with the run config `cfg`."""
        pipe = cls(model, cfg.model, cfg.diffusion, copy.deepcopy(cfg.sampling), dataset=cfg.data.dataset,
                   class_names=None, **kwargs)
        pipe.preset = cfg.preset
        return pipe

    @classmethod
    def from_pretrained(cls, path, weights: str = "auto", mindir: bool = False) -> "DiffusionPipeline":
        """Load from a pipeline directory, a shipped pipeline's name (see `shipped_pipelines`), a run
        directory (its config.json and newest checkpoint) or a checkpoint inside a run.
        weights: for runs and checkpoints, "auto" (EMA when the checkpoint has it), "ema" or "raw";
        a pipeline directory holds one set. mindir: sample a pipeline directory's exported graph
        (denoiser.mindir, written by export.py --format mindir) instead of building the model."""
        path = Path(path)
        if not path.exists() and str(path) in shipped_pipelines():
            path = PRETRAINED_DIR / str(path)
        if mindir:
            return cls._from_mindir(path)
        if directory.is_pipeline_dir(path):
            if weights not in ("auto", "ema"):
                raise ValueError(f"{path} is a pipeline directory: it holds one set of weights (weights='auto')")
            return cls._from_pipeline_dir(path)
        if path.is_dir() and (path / "config.json").is_file() or path.is_file():
            return cls._from_run(path, weights)
        known = ", ".join(shipped_pipelines()) or "none"
        raise FileNotFoundError(f"{path} is neither a pipeline directory (with {directory.MODEL_CONFIG}), a run directory "
                                f"(with config.json), a checkpoint file nor a shipped pipeline (shipped: {known})")

    @classmethod
    def _from_pipeline_dir(cls, path: Path) -> "DiffusionPipeline":
        parts = directory.read_pipeline_dir(path)
        model = build_model(parts["model_config"])
        if problems := ckpt_io.fit_problems(model, parts["weights"]):
            raise directory.PipelineFileError(f"{path / directory.WEIGHTS} does not fit the model {directory.MODEL_CONFIG} "
                                          f"describes: {'. '.join(problems)}; export the pipeline again")
        ckpt_io.assign(model, parts["weights"], str(path / directory.WEIGHTS))
        pipe = cls(model, parts["model_config"], parts["diffusion"], parts["sampling"], parts["dataset"],
                   parts["class_names"], parts["card"], source=str(path))
        pipe.loaded_weights = "pipeline"
        return pipe

    @classmethod
    def _from_mindir(cls, path: Path) -> "DiffusionPipeline":
        if not (path / MINDIR).is_file():
            raise FileNotFoundError(f"{path / MINDIR} does not exist: export the model with scripts/export.py "
                                    f"--format mindir --to {path}")
        parts = directory.read_pipeline_dir(path)
        pipe = cls(MindIRDenoiser(path / MINDIR), parts["model_config"], parts["diffusion"], parts["sampling"],
                   parts["dataset"], parts["class_names"], parts["card"], source=str(path))
        pipe.loaded_weights = "mindir"
        return pipe

    @classmethod
    def _from_run(cls, path: Path, weights: str) -> "DiffusionPipeline":
        if path.is_dir():
            run_dir, ckpt = path, ckpt_io.latest_checkpoint(path)
        else:
            ckpt = path
            run_dir = next((d for d in (ckpt.parent.parent, ckpt.parent) if (d / "config.json").is_file()), None)
        saved = ckpt_io.read_checkpoint(ckpt)
        if run_dir is not None:
            cfg = Config.load(run_dir)  # the run's settings, as a resumed run last saved them
        elif (embedded := ckpt_io.saved_config(saved)) is not None:
            cfg = Config.from_dict(embedded, f"the config inside {ckpt}")
        else:
            raise FileNotFoundError(f"no config.json beside {ckpt} or in {ckpt.parent.parent}, and the checkpoint holds "
                                    "none: keep checkpoints inside their run directory (run/checkpoints/*.ckpt)")
        model = build_model(cfg.model)
        info = ckpt_io.load_into(model, ckpt, weights=weights, saved=saved)
        pipe = cls.from_config(cfg, model, source=str(run_dir or ckpt))
        pipe.checkpoint, pipe.checkpoint_step, pipe.loaded_weights = Path(ckpt), info.get("step"), info["weights"]
        return pipe

    def save_pretrained(self, out, card: str | None = None, overwrite: bool = False) -> Path:
        """Write this pipeline as a directory (see ddpm_ms/pipeline/directory.py): the model's current
        weights, its configs and `card` (default: this pipeline's card, or a short one)."""
        card = card if card is not None else self.card or render_card(self.card_info())
        return directory.write_pipeline_dir(out, self.model, self.model_config, self.diffusion, self.sampling,
                                        self.dataset, self.class_names, card, overwrite=overwrite)

    def card_info(self) -> dict:
        """What a model card says about this pipeline without an evaluation (see pipeline/card.py)."""
        return {"dataset": self.dataset, "preset": self.preset, "arch": self.model_config.arch,
                "parameters": count_parameters(self.model), "image_shape": self.image_shape,
                "num_classes": self.num_classes, "class_names": self.class_names, "diffusion": self.diffusion,
                "sampling": self.sampling, "training_steps": self.checkpoint_step,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, "weights": self.loaded_weights}

    # -- what it makes ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.model_config.num_classes)

    @property
    def image_shape(self) -> tuple:
        return (self.model_config.channels, *self.model_config.image_size)

    def scheduler(self, sampler: str | None = None, eta: float | None = None, timestep_spacing: str | None = None,
                  lambda_min_clipped: float | None = None, solver_order: int | None = None, clip_sample: bool = True):
        """A fresh scheduler for this model: `sampler` (default: the pipeline's) with the model's
        schedule and prediction type (see ddpm_ms.sampling.scheduler_for)."""
        return scheduler_for(sampler or self.sampling.sampler, self.diffusion, variance=self.sampling.variance,
                             eta=eta, clip=clip_sample, timestep_spacing=timestep_spacing,
                             lambda_min_clipped=lambda_min_clipped, solver_order=solver_order)

    def labels_for(self, num_images: int, class_labels=None) -> np.ndarray | None:
        """The class of each image: None (unconditional model), else `class_labels` as one label or one
        per image, by number or name ("sneaker"; "none" or num_classes: no class); None on a
        class-conditional model draws every class in turn."""
        n = self.num_classes
        if not n:
            if class_labels is not None:
                raise ValueError("class labels were given, but this model is unconditional (model.num_classes = 0)")
            return None
        if class_labels is None:
            return balanced_labels(num_images, n)
        given = [class_labels] if np.ndim(class_labels) == 0 else list(class_labels)
        labels = np.array([self.class_index(c) for c in given], np.int32)
        if labels.size == 1:
            labels = np.full(num_images, labels[0], np.int32)
        if labels.size != num_images:
            raise ValueError(f"class_labels must be one label or {num_images} (one per image), got {labels.size}")
        return labels

    def class_index(self, label) -> int:
        """A class by number (0..num_classes; num_classes is "no class") or by name (case and
        "-"/"_" ignored; "none" is "no class"; a name's first part before "/" also counts: "t-shirt")."""
        n = self.num_classes
        if isinstance(label, (int, np.integer)):
            if not 0 <= int(label) <= n:
                raise ValueError(f"class label {label} is outside 0..{n - 1} ({n}: no class)")
            return int(label)
        text = str(label).strip()
        if text.isdigit():
            return self.class_index(int(text))
        key = text.lower().replace("-", " ").replace("_", " ")
        if key == "none":
            return n
        for i, name in enumerate(self.class_names):
            if key in (name.lower(), name.lower().split("/")[0].replace("-", " ")):
                return i
        known = ", ".join(f"{i} {name}" for i, name in enumerate(self.class_names)) or f"0..{n - 1}"
        raise ValueError(f"class {label!r} is not one of this model's classes ({known}) or 'none'")

    def __call__(self, num_images: int = 16, class_labels=None, sampler: str | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, guidance=None,
                 seed: int = 0, batch_size: int = 64, scheduler=None, latents=None,
                 return_trajectory: bool | int = False, progress: bool = True) -> PipelineOutput:
        """Draw `num_images` images in batches of `batch_size` (batch b uses noise stream b of `seed`:
        the same seed gives the same images on the same device).

        sampler, num_inference_steps, guidance_scale: None takes the pipeline's `sampling` defaults
        (num_inference_steps None there too: the sampler's own default, 20 for DPM-Solver++).
        scheduler: a ready one instead of `sampler` (`scheduler(...)` makes one with settings such as
        eta or timestep_spacing; its `set_timesteps(timesteps=...)` sets a custom grid, which the call
        keeps unless num_inference_steps is given). class_labels: see `labels_for`.
        guidance: pieces that steer the images, one or a list: a ClassifierFreeGuidance instead of
        the pipeline's (`guidance` makes one from its defaults) and LossGuidance terms (ColorGuidance,
        TextGuidance, ...; ddpm_ms.sampling.loss_guidance).
        latents: the starting noise, (num_images, C, H, W), instead of drawing it from `seed` (the
        SDE samplers' fresh noise still comes from `seed`).
        return_trajectory: also keep Frames of the first batch, every step (True) or every k-th (k)."""
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        scheduler = self._scheduler_for_call(sampler, num_inference_steps, scheduler)
        labels = self.labels_for(num_images, class_labels)
        cfg, terms = split_guidance(guidance)
        if cfg is None:
            cfg = self.guidance(guidance_scale)
        elif guidance_scale is not None:
            raise ValueError("pass guidance_scale or a ClassifierFreeGuidance in `guidance`, not both")
        elif cfg.scale != 1 and not self.num_classes:
            raise ValueError("classifier-free guidance needs a class-conditional model; this one is unconditional")
        every = int(return_trajectory) if return_trajectory else None
        images, trajectory = sample(self.model, scheduler, (num_images, *self.image_shape), seed=seed,
                                    batch_size=batch_size, class_labels=labels, guidance=[cfg, *terms], edit=self.edit,
                                    x_T=latents, trajectory_every=every, jit=self.jit, progress=progress)
        return PipelineOutput(images, labels, trajectory, np.array(scheduler.timesteps))

    def img2img(self, image, strength: float = 0.8) -> "DiffusionPipeline":
        """This pipeline, sharing its model, turned to image-to-image (SDEdit): its calls start from
        `image` (a file, PIL image or array, see ddpm_ms.sampling.editing.read_image) noised to
        `strength` (0: the image unchanged, 1: ignore it), as diffusers' img2img pipelines do."""
        return self._with_edit(Img2Img(read_image(image, self.image_shape), strength))

    def inpaint(self, image, mask_image, strength: float = 1.0, jump_length: int = 1,
                jump_n_sample: int = 1) -> "DiffusionPipeline":
        """This pipeline, sharing its model, turned to inpainting (RePaint): its calls repaint where
        `mask_image` is white (1) and keep `image` elsewhere (files, PIL images or arrays), with
        RePaint's resampling: jump_length steps back, jump_n_sample passes (1: none; the ddpm and ddim
        samplers). strength < 1 also starts from the image, as `img2img` does."""
        return self._with_edit(Inpaint(read_image(image, self.image_shape),
                                       read_image(mask_image, self.image_shape, "mask"), strength, jump_length,
                                       jump_n_sample))

    def _with_edit(self, edit) -> "DiffusionPipeline":
        pipe = copy.copy(self)
        pipe.edit = edit
        return pipe

    def _scheduler_for_call(self, sampler, num_inference_steps, scheduler):
        """The call's scheduler on its grid: a ready `scheduler` or the `sampler`'s, with `num_inference_steps`
        or the pipeline's steps for its own sampler (else the scheduler's grid as it is)."""
        default_sampler = scheduler is None and sampler in (None, self.sampling.sampler)
        if scheduler is None:
            scheduler = self.scheduler(sampler)
        elif sampler is not None:
            raise ValueError("pass either a ready `scheduler` or a `sampler` name, not both")
        steps = num_inference_steps or (self.sampling.steps if default_sampler else None)
        if steps is not None:
            if not 1 <= int(steps) <= self.diffusion.timesteps:
                raise ValueError(f"num_inference_steps must be in 1..{self.diffusion.timesteps} (the model's "
                                 f"diffusion timesteps), got {steps}")
            scheduler.set_timesteps(int(steps))
        return scheduler

    def guidance(self, guidance_scale=None, guidance_rescale=None, guidance_interval=None) -> ClassifierFreeGuidance:
        """The pipeline's classifier-free guidance with these changes (None: its default; guidance_interval
        "all" or (): every step); no guidance (scale 1) for an unconditional model, where giving any is an error."""
        if not self.num_classes:
            given = [k for k, v in (("guidance_scale", guidance_scale), ("guidance_rescale", guidance_rescale),
                                    ("guidance_interval", guidance_interval)) if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need a class-conditional model; this one is unconditional")
            return ClassifierFreeGuidance(1.0)
        s = self.sampling
        interval = s.guidance_interval if guidance_interval is None else guidance_interval
        if isinstance(interval, str) and interval.lower() == "all" or interval == ():
            interval = None
        return ClassifierFreeGuidance(s.guidance_scale if guidance_scale is None else guidance_scale,
                                      s.guidance_rescale if guidance_rescale is None else guidance_rescale, interval)

    def __repr__(self) -> str:
        kind = f"{self.num_classes} classes" if self.num_classes else "unconditional"
        return (f"DiffusionPipeline({self.model_config.arch}, {self.dataset}, {kind}, "
                f"{'x'.join(map(str, self.image_shape))}, sampler {self.sampling.sampler!r}, source {self.source!r})")


def _default_class_names(dataset, model_config) -> list:
    names = list(class_names(dataset))
    n = int(model_config.num_classes)
    return names if len(names) == n else [str(i) for i in range(n)]
