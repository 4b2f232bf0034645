"""Checkpoints: written atomically, loaded only into a model built from the config beside them."""
from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
from mindspore import nn

from ddpm_ms.config import Config


EXTRA_KEYS = ("step", "epoch")  # bookkeeping saved beside the parameters


class CheckpointMismatch(ValueError):
    """A checkpoint's parameters do not fit the model its config describes."""


def save_checkpoint(net: nn.Cell, path, extra: dict | None = None) -> Path:
    """Write `net`'s parameters to `path` via a temporary file, so an interrupted save never
    leaves a half-written checkpoint under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    # Names relative to `net`: a model trained inside a wrapper (GaussianDiffusion) carries a
    # "model." prefix in Parameter.name that a freshly built model does not.
    params = [{"name": name, "data": p} for name, p in net.parameters_and_names()]
    unknown = set(extra or {}) - set(EXTRA_KEYS)
    if unknown:
        raise ValueError(f"unknown checkpoint extras {sorted(unknown)}; allowed: {EXTRA_KEYS}")
    ms.save_checkpoint(params, str(tmp), append_dict=extra or None)
    os.replace(tmp, path)
    return path


def load_into(net: nn.Cell, path) -> dict:
    """Load the checkpoint at `path` into `net`, after checking that every parameter name and
    shape matches. Returns the extra entries saved with it (e.g. step)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    saved = ms.load_checkpoint(str(path))
    own = dict(net.parameters_and_names())
    wanted = {name: tuple(p.shape) for name, p in own.items()}
    params = {k: v for k, v in saved.items() if isinstance(v, ms.Parameter) and k in wanted}
    extras = {k: v for k, v in saved.items() if k in EXTRA_KEYS}
    missing = sorted(set(wanted) - set(params))
    unexpected = sorted(set(saved) - set(wanted) - set(EXTRA_KEYS))
    shapes = sorted(f"{k}: checkpoint {tuple(v.shape)} vs model {wanted[k]}"
                    for k, v in params.items() if tuple(v.shape) != wanted[k])
    if missing or shapes or unexpected:
        lines = []
        if shapes:
            lines.append(f"{len(shapes)} parameter(s) differ in shape: " + "; ".join(shapes[:8])
                         + (" ..." if len(shapes) > 8 else ""))
        if missing:
            lines.append(f"{len(missing)} parameter(s) missing from the checkpoint: " + ", ".join(missing[:8])
                         + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            lines.append(f"{len(unexpected)} parameter(s) the model does not have: " + ", ".join(unexpected[:8])
                         + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointMismatch(
            f"{path} does not fit this model. " + " ".join(lines)
            + ". Load it with the config.json saved in its run directory.")
    for name, value in params.items():
        own[name].set_data(value.data if isinstance(value, ms.Parameter) else value)
    return {k: (v.asnumpy().item() if hasattr(v, "asnumpy") and v.size == 1 else v) for k, v in extras.items()}


def latest_checkpoint(run_dir) -> Path:
    """The run's final checkpoint, or else its newest step checkpoint."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    final = ckpt_dir / "final.ckpt"
    if final.is_file():
        return final
    steps = sorted(ckpt_dir.glob("step_*.ckpt"))
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {ckpt_dir}: train (scripts/train.py) or pass --ckpt PATH")
    return steps[-1]


def load_model(run_dir, checkpoint=None):
    """(model, config) from a run directory, using its config.json and its latest (or the given)
    checkpoint."""
    from ddpm_ms.models import UNet

    cfg = Config.load(run_dir)
    model = UNet(cfg.model)
    load_into(model, checkpoint or latest_checkpoint(run_dir))
    model.set_train(False)
    return model, cfg
