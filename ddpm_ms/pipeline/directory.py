"""The pipeline directory: what `save_pretrained` writes and `from_pretrained` reads.

    model.safetensors       the denoiser's weights (the EMA weights of a run, by default)
    model_config.json       the backbone (ModelConfig), the data set it learnt and its class names
    scheduler_config.json   the noise schedule and prediction type, with diffusers' key names,
                            and the sampling defaults (SamplingConfig)
    README.md               the model card

Each JSON file carries `format_version`; a newer one than this code knows is refused with one
line. Nothing else is needed to sample: no optimizer state, no run directory, no pickle.
A directory is written beside its destination and renamed into place, so a reader never sees
half of one.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import mindspore as ms

from ddpm_ms.config import DiffusionConfig, ModelConfig, SamplingConfig, backbone_config, own_model_fields
from ddpm_ms.registry import BACKBONES, SAMPLERS

FORMAT_VERSION = 2  # 1: model_config.json listed every backbone's fields; 2: only its backbone's
WEIGHTS, MODEL_CONFIG, SCHEDULER_CONFIG, CARD = ("model.safetensors", "model_config.json", "scheduler_config.json",
                                                 "README.md")
REQUIRED = (WEIGHTS, MODEL_CONFIG, SCHEDULER_CONFIG)
# ddpm_ms's prediction targets under diffusers' names (ddpm_ms.sampling reads both).
DIFFUSERS_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


class PipelineFileError(ValueError):
    """A pipeline directory is missing a file, holds a damaged or mismatched one, or is newer than this code."""


def is_pipeline_dir(path) -> bool:
    """A folder holding any of a pipeline's files (read_pipeline_dir names the ones missing); a run
    directory (config.json) is not one."""
    path = Path(path)
    return path.is_dir() and not (path / "config.json").is_file() and any((path / n).is_file() for n in REQUIRED)


# -- writing ------------------------------------------------------------------------------------
def model_config_dict(model_config: ModelConfig, dataset: str | None, class_names) -> dict:
    return {"format_version": FORMAT_VERSION, "_class_name": type_name(model_config), **_plain(model_config),
            "dataset": dataset, "class_names": list(class_names or [])}


def scheduler_config_dict(diffusion: DiffusionConfig, sampling: SamplingConfig) -> dict:
    return {"format_version": FORMAT_VERSION, "_class_name": SAMPLERS[sampling.sampler].scheduler.__name__,
            "num_train_timesteps": diffusion.timesteps, "beta_schedule": diffusion.beta_schedule,
            "beta_start": diffusion.beta_start, "beta_end": diffusion.beta_end,
            "prediction_type": DIFFUSERS_PREDICTION[diffusion.objective], "variance_type": sampling.variance,
            "sampling": _plain(sampling)}


def type_name(model_config: ModelConfig) -> str:
    return BACKBONES[model_config.arch].model.__name__


def write_pipeline_dir(out, model, model_config: ModelConfig, diffusion: DiffusionConfig, sampling: SamplingConfig,
                       dataset: str | None, class_names, card: str, overwrite: bool = False) -> Path:
    """Write the four files into `out` at once (built in a sibling temporary folder, then renamed).
    An existing non-empty `out` is refused unless `overwrite`; then only a pipeline directory is replaced."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} already exists; choose another directory (pipelines are never written "
                                  "over; pass overwrite=True to replace a pipeline directory)")
        if not is_pipeline_dir(out):
            raise FileExistsError(f"{out} exists and is not a pipeline directory (no {MODEL_CONFIG}); it is left as "
                                  "it is: choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = [{"name": name, "data": p} for name, p in model.parameters_and_names()]
        ms.save_checkpoint(entries, str(tmp / WEIGHTS), format="safetensors")
        (tmp / WEIGHTS).chmod(0o644)  # MindSpore writes it owner-read-only; a handed-on file is the user's to manage
        _write_json(tmp / MODEL_CONFIG, model_config_dict(model_config, dataset, class_names))
        _write_json(tmp / SCHEDULER_CONFIG, scheduler_config_dict(diffusion, sampling))
        (tmp / CARD).write_text(card)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- reading ------------------------------------------------------------------------------------
def read_pipeline_dir(path) -> dict:
    """The parts of a pipeline directory: model_config, diffusion, sampling (config dataclasses),
    dataset, class_names, weights (name -> Parameter) and card (the README text, "" when absent).
    Any missing, damaged or too-new file is a PipelineFileError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise PipelineFileError(f"pipeline directory {path} does not exist")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise PipelineFileError(f"{path / missing[0]} is missing: a pipeline directory holds {', '.join(REQUIRED)}; "
                                "write one with scripts/export.py --run RUN --to DIR")
    model_d = _read_json(path / MODEL_CONFIG)
    sched_d = _read_json(path / SCHEDULER_CONFIG)
    meta = {k: model_d.pop(k, None) for k in ("format_version", "_class_name", "dataset", "class_names")}
    if meta["format_version"] < 2:
        model_d = own_model_fields(model_d)
    try:
        model = backbone_config(model_d.pop("arch", "unet"), **model_d)
        model.validate()
        diffusion = DiffusionConfig(timesteps=sched_d["num_train_timesteps"], beta_schedule=sched_d["beta_schedule"],
                                    beta_start=sched_d.get("beta_start"), beta_end=sched_d.get("beta_end"),
                                    objective=_objective(sched_d["prediction_type"]))
        diffusion.validate()
        sampling = SamplingConfig(**{**sched_d.get("sampling", {}),
                                     "variance": sched_d.get("variance_type", "fixed_small")})
        sampling.validate()
    except (TypeError, KeyError, ValueError) as e:
        which = SCHEDULER_CONFIG if isinstance(e, KeyError) or "sampling" in str(e) or "diffusion" in str(e) \
            else MODEL_CONFIG
        raise PipelineFileError(f"{path / which} does not describe a model this ddpm_ms can build "
                                f"({type(e).__name__}: {e}); export the pipeline again") from None
    try:
        weights = ms.load_checkpoint(str(path / WEIGHTS), format="safetensors")
    except Exception as e:  # MindSpore raises RuntimeError/ValueError on a cut or foreign file
        raise PipelineFileError(f"{path / WEIGHTS} cannot be read as safetensors ({type(e).__name__}); it may be "
                                "cut short: export the pipeline again") from None
    card = (path / CARD).read_text() if (path / CARD).is_file() else ""
    return {"model_config": model, "diffusion": diffusion, "sampling": sampling,
            "dataset": meta["dataset"], "class_names": meta["class_names"] or [], "weights": weights, "card": card}


def _objective(prediction_type: str) -> str:
    names = {v: k for k, v in DIFFUSERS_PREDICTION.items()}
    if prediction_type in DIFFUSERS_PREDICTION:
        return prediction_type
    if prediction_type not in names:
        raise ValueError(f"prediction_type {prediction_type!r} is none of {sorted(names)}")
    return names[prediction_type]


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise PipelineFileError(f"{path} is not valid JSON ({e}); export the pipeline again") from None
    if not isinstance(d, dict):
        raise PipelineFileError(f"{path} holds no JSON object; export the pipeline again")
    version = d.get("format_version")
    if not isinstance(version, int):
        raise PipelineFileError(f"{path} has no format_version: it was not written by ddpm_ms's save_pretrained")
    if version > FORMAT_VERSION:
        raise PipelineFileError(f"{path} has format_version {version}, newer than this ddpm_ms reads "
                                f"({FORMAT_VERSION}): upgrade ddpm_ms (pip install -U ddpm_ms)")
    return d


def _plain(obj) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def _write_json(path: Path, d: dict) -> None:
    path.write_text(json.dumps(d, indent=2) + "\n")
