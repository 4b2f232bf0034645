"""Checkpoints: the whole training state in one file, written atomically, loaded only into a
model that fits it.

One `.ckpt` (MindSpore's format) holds
- the model's weights under their names relative to the model (`init_conv.weight`, ...),
- the EMA weights under `ema.<name>` (when the run keeps an EMA),
- the optimizer state under `optimizer.<name>` (Adam moments, beta powers, global_step),
- the dynamic loss scale and its clean-step counter under `loss_scaler.*` (float16 only),
- and scalars and strings: step, epoch, data position (`batch_in_epoch`), EMA updates done,
  the host RNG state and the run's config as JSON, the format version.

A file is written to `.tmp-<pid>-<name>`, flushed to disk, then renamed: a reader (or a run killed
at any moment) sees either the previous complete file or the new complete one. Rotation keeps
the newest `keep_last` `step_*.ckpt` files and never touches anything else, so a checkpoint is
pinned by renaming it (`cp step_0002000.ckpt keep_2000.ckpt`), by a `<name>.pin` file beside it,
or by `--pin-every N`.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

from ddpm_ms.config import Config
from ddpm_ms.files import atomic_write

FORMAT = 2
EMA_PREFIX, OPTIMIZER_PREFIX, SCALER_PREFIX = "ema.", "optimizer.", "loss_scaler."
SCALER_STATE = ("scale_value", "counter")  # the Parameters of ms.amp.DynamicLossScaler
STATE_KEYS = ("step", "epoch", "batch_in_epoch", "ema_updates", "elapsed_s", "rng", "config", "format")
_STEP_NAME = re.compile(r"^step_(\d+)\.ckpt$")


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model or config it is loaded into."""


class CheckpointUnreadable(OSError):
    """A checkpoint file cannot be parsed (truncated, not a checkpoint)."""


# -- writing ------------------------------------------------------------------------------------
def _named(cell: nn.Cell, prefix: str = "") -> list[dict]:
    return [{"name": prefix + name, "data": p} for name, p in cell.parameters_and_names()]


def optimizer_state(optimizer: nn.Optimizer, model_params) -> dict:
    """The optimizer's own parameters (moments, beta powers, global_step) by name."""
    own = {id(p) for p in model_params}
    return {p.name: p for p in optimizer.get_parameters() if id(p) not in own}


def save_checkpoint(model: nn.Cell, path, extra: dict | None = None, ema_model: nn.Cell | None = None,
                    optimizer: nn.Optimizer | None = None, loss_scaler=None, config: Config | None = None) -> Path:
    """Write the training state to `path` atomically. `extra` holds the scalars and strings of
    STATE_KEYS (step, epoch, ...)."""
    extra = dict(extra or {})
    unknown = set(extra) - set(STATE_KEYS)
    if unknown:
        raise ValueError(f"unknown checkpoint entries {sorted(unknown)}; allowed: {STATE_KEYS}")
    entries = _named(model)
    if ema_model is not None:
        entries += _named(ema_model, EMA_PREFIX)
    if optimizer is not None:
        entries += [{"name": OPTIMIZER_PREFIX + n, "data": p}
                    for n, p in optimizer_state(optimizer, model.get_parameters()).items()]
    if loss_scaler is not None:
        entries += [{"name": SCALER_PREFIX + k, "data": getattr(loss_scaler, k)} for k in SCALER_STATE]
    if config is not None:
        extra["config"] = json.dumps(config.to_dict())
    extra["format"] = FORMAT
    return atomic_write(path, lambda tmp: ms.save_checkpoint(entries, str(tmp), append_dict=extra))


# -- reading ------------------------------------------------------------------------------------
def read_checkpoint(path) -> dict:
    """Everything in the file, by name; an unreadable file is a CheckpointUnreadable error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return ms.load_checkpoint(str(path))
    except Exception as e:  # MindSpore raises ValueError/RuntimeError on a truncated protobuf
        raise CheckpointUnreadable(f"{path} cannot be read as a checkpoint ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}); it may be truncated. "
                                   "Use an earlier checkpoint of the run.") from e


def _value(v):
    if hasattr(v, "asnumpy"):
        a = v.asnumpy()
        return a.item() if a.size == 1 else a
    return v


def state_of(saved: dict) -> dict:
    """The scalars and strings (step, epoch, rng, config ...) of a read checkpoint."""
    return {k: _value(saved[k]) for k in STATE_KEYS if k in saved}


def has_ema(saved: dict) -> bool:
    return any(k.startswith(EMA_PREFIX) for k in saved)


def _section(saved: dict, weights: str) -> dict:
    """The parameters of one set of weights ("raw" or "ema"), by name relative to the model."""
    if weights == "ema":
        return {k[len(EMA_PREFIX):]: v for k, v in saved.items() if k.startswith(EMA_PREFIX)}
    skip = (EMA_PREFIX, OPTIMIZER_PREFIX, SCALER_PREFIX)
    return {k: v for k, v in saved.items()
            if not k.startswith(skip) and k not in STATE_KEYS and isinstance(v, ms.Parameter)}


def _listing(items, limit=8) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def fit_problems(net: nn.Cell, params: dict) -> list[str]:
    """What keeps `params` (name -> tensor) from fitting `net`: parameters whose shapes differ,
    that are missing, or that the model does not have (empty when they fit)."""
    wanted = {name: tuple(p.shape) for name, p in net.parameters_and_names()}
    missing = sorted(set(wanted) - set(params))
    unexpected = sorted(set(params) - set(wanted))
    shapes = sorted(f"{k}: checkpoint {tuple(v.shape)} vs model {wanted[k]}"
                    for k, v in params.items() if k in wanted and tuple(v.shape) != wanted[k])
    lines = []
    if shapes:
        lines.append(f"{len(shapes)} parameter(s) differ in shape: " + "; ".join(shapes[:8])
                     + (" ..." if len(shapes) > 8 else ""))
    if missing:
        lines.append(f"{len(missing)} parameter(s) missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} parameter(s) the model does not have: {_listing(unexpected)}")
    return lines


def check_fits(net: nn.Cell, params: dict, source: str) -> None:
    """Raise CheckpointMismatch naming every parameter whose name or shape does not fit `net`."""
    if problems := fit_problems(net, params):
        raise CheckpointMismatch(f"{source} does not fit this model. " + ". ".join(problems)
                                 + ". Load it with the config.json saved in its run directory.")


def load_into(net: nn.Cell, path, weights: str = "raw", saved: dict | None = None,
              adapt_labels: bool = False) -> dict:
    """Load one set of weights ("raw", "ema", or "auto": EMA when the file has it) from the
    checkpoint at `path` into `net`, after checking every name and shape. Returns the file's
    state entries (step, epoch, ...) plus "weights": the set that was loaded, and "labels": what
    `adapt_label_embedding` did (None when nothing).

    adapt_labels: fine-tuning may change the label set (a class-conditional run fine-tuned on an
    unlabelled folder, say); see `adapt_label_embedding`."""
    saved = read_checkpoint(path) if saved is None else saved
    if weights == "auto":
        weights = "ema" if has_ema(saved) else "raw"
    if weights not in ("raw", "ema"):
        raise ValueError(f"weights must be raw, ema or auto, got {weights!r}")
    params = _section(saved, weights)
    if weights == "ema" and not params:
        raise CheckpointMismatch(f"{path} holds no EMA weights (the run trained with --ema-decay 0 or "
                                 "predates EMA); load the raw weights instead")
    note = None
    if adapt_labels:
        params, note = adapt_label_embedding(params, net)
    assign(net, params, str(path))
    return {**state_of(saved), "weights": weights, "labels": note}


def assign(net: nn.Cell, params: dict, source: str) -> None:
    """Set `net`'s parameters to `params` (name -> Parameter or Tensor) after `check_fits`."""
    check_fits(net, params, source)
    own = dict(net.parameters_and_names())
    for name, value in params.items():
        own[name].set_data(value.data if isinstance(value, ms.Parameter) else value)


def adapt_label_embedding(params: dict, net: nn.Cell) -> tuple[dict, str | None]:
    """Weights `params` of a denoiser rewritten for `net`'s label set, so that fine-tuning starts from
    exactly the source model's unconditional behaviour ("no class", or no labels at all):

    - class-conditional -> unconditional (an image folder has no labels): the "no class" row
      (the table's last) is added to the time MLP's output bias and the table dropped;
    - unconditional -> class-conditional: a zero table, so every label starts as "no class";
    - another number of classes: every row, the new labels' too, starts as the source's "no class"
      row (labels of another data set mean other things).

    The two parameters' names are the backbone's declared `label_table` and `time_bias`.
    Returns (params, a note saying what changed, or None when the label sets agree)."""
    table_name, bias_name = net.label_table, net.time_bias
    want = {name: tuple(p.shape) for name, p in net.parameters_and_names()}
    if table_name not in params and table_name not in want:
        return params, None
    if table_name in params and tuple(params[table_name].shape) == want.get(table_name):
        return params, None
    params = dict(params)
    if table_name not in want:
        table = params.pop(table_name).asnumpy()
        if bias_name not in params:
            raise CheckpointMismatch(f"the checkpoint has a label embedding but no {bias_name} to fold it into")
        bias = params[bias_name].asnumpy()
        params[bias_name] = ms.Tensor(bias + table[-1].astype(bias.dtype))
        return params, (f"its {table.shape[0] - 1} class labels dropped, the 'no class' embedding folded "
                        "into the time embedding: this model is unconditional")
    rows, width = want[table_name]
    no_class = np.zeros(width, np.float32)
    if table_name in params:
        old = params[table_name].asnumpy()
        if old.shape[1] != width:
            raise CheckpointMismatch(f"the checkpoint's label embedding is {old.shape[1]} wide, the model's {width}")
        no_class = old[-1].astype(np.float32)
        note = f"its {old.shape[0] - 1} class labels replaced by {rows - 1} new ones, each starting as 'no class'"
    else:
        note = f"{rows - 1} class labels added to the source's unconditional model, each starting as 'no class'"
    table = np.tile(no_class, (rows, 1))
    params[table_name] = ms.Tensor(table)
    return params, note


def load_optimizer_state(optimizer: nn.Optimizer, model_params, saved: dict, path) -> None:
    own = optimizer_state(optimizer, model_params)
    stored = {k[len(OPTIMIZER_PREFIX):]: v for k, v in saved.items() if k.startswith(OPTIMIZER_PREFIX)}
    if set(own) != set(stored) or any(tuple(own[k].shape) != tuple(v.shape) for k, v in stored.items()):
        raise CheckpointMismatch(f"{path}: the optimizer state does not fit this optimizer "
                                 f"(checkpoint has {len(stored)} entries, the optimizer {len(own)}); "
                                 "resume with the run's own config")
    for name, value in stored.items():
        own[name].set_data(value.data if isinstance(value, ms.Parameter) else value)


def load_scaler_state(loss_scaler, saved: dict) -> None:
    """Restore a DynamicLossScaler's scale and counter (a checkpoint without them leaves it)."""
    for k in SCALER_STATE:
        if SCALER_PREFIX + k in saved:
            getattr(loss_scaler, k).set_data(saved[SCALER_PREFIX + k].data)


# -- configs ------------------------------------------------------------------------------------
def config_differences(saved: dict, current: dict, sections=("model", "diffusion", "data", "train", "sampling"),
                       ignore=()) -> list[str]:
    """'section.field: checkpoint A, now B' for every field that differs."""
    out = []
    for section in sections:
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if name in ignore:
                continue
            va, vb = a.get(key), b.get(key)
            if isinstance(va, list):
                va = tuple(va)
            if isinstance(vb, list):
                vb = tuple(vb)
            if va != vb:
                out.append(f"{name}: checkpoint {va!r}, now {vb!r}")
    return out


def saved_config(saved: dict) -> dict | None:
    """The config a checkpoint was written with, in the current format with every field (an older
    format is migrated and the fields it predates take their defaults, see config.migrate_config)."""
    text = state_of(saved).get("config")
    return Config.from_dict(json.loads(text), "the checkpoint's config").to_dict() if isinstance(text, str) else None


# -- run directories ----------------------------------------------------------------------------
def step_of(path: Path) -> int | None:
    m = _STEP_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir) -> list[Path]:
    """The run's checkpoints, oldest first: step_*.ckpt by step, then any other *.ckpt by
    modification time (final.ckpt, pinned copies); temporary files are ignored."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    files = [p for p in ckpt_dir.glob("*.ckpt") if not p.name.startswith(".")] if ckpt_dir.is_dir() else []
    return sorted(files, key=lambda p: (step_of(p) is None, step_of(p) or 0, p.stat().st_mtime))


def latest_checkpoint(run_dir) -> Path:
    """The run's final checkpoint, or else its newest step checkpoint."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    final = ckpt_dir / "final.ckpt"
    if final.is_file():
        return final
    steps = [p for p in list_checkpoints(run_dir) if step_of(p) is not None]
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: train (scripts/train.py) or pass --ckpt PATH")
    return steps[-1]


def resumable_checkpoint(run_dir) -> tuple[Path, dict]:
    """The checkpoint with the highest step that reads back, and its contents. A newer file
    that does not read (a damaged disk, a copy cut short) is skipped with a warning."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise FileNotFoundError(f"no checkpoints in {Path(run_dir) / 'checkpoints'} to resume from; "
                                "start the run again without --resume")
    best = None
    for path in candidates:
        try:
            saved = read_checkpoint(path)
        except CheckpointUnreadable as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            continue
        step = state_of(saved).get("step", -1)
        if best is None or step >= best[2]:
            best = (path, saved, step)
    if best is None:
        raise CheckpointUnreadable(f"none of the {len(candidates)} checkpoints in {Path(run_dir) / 'checkpoints'} "
                                   "can be read; start the run again")
    return best[0], best[1]


def rotate_checkpoints(run_dir, keep_last: int, pin_every: int | None = None) -> list[Path]:
    """Delete all but the newest `keep_last` step_*.ckpt files (0 keeps all). Files whose step is
    a multiple of `pin_every`, or that have a `<name>.pin` file beside them, are kept. Returns
    the deleted paths."""
    if keep_last <= 0:
        return []
    steps = [p for p in list_checkpoints(run_dir) if step_of(p) is not None]
    removed = []
    for path in steps[:-keep_last]:
        pinned = (pin_every and step_of(path) % pin_every == 0) or path.with_name(path.name + ".pin").exists()
        if not pinned:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
