"""Move U-Net weights between ddpm_ms checkpoints and the proxy (research/recipe_search.py), both ways,
so that one side's trained model can be sampled and scored by the other's code. That splits
a FID gap between the two into "training" and "sampling / scoring".

    # a ddpm_ms checkpoint's EMA weights (or a run's newest, or a pipeline directory's) -> npz for
    # research/recipe_search.py --score-weights
    python ms_weights_io.py export RUN/checkpoints/final.ckpt OUT.npz

    # proxy weights (recipe_search.py --save-weights) -> a run directory evaluate.py reads
    python ms_weights_io.py import PROXY.npz --like RUN --out NEW_RUN
    python scripts/evaluate.py --ckpt NEW_RUN/checkpoints/final.ckpt ...

The npz holds "w:<MindSpore parameter name>" float32 arrays (unet_torch.load_ms_weights and
unet_torch.ms_weights use the same layout). Runs with the system python (MindSpore).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "w:"


def export(ckpt: str, out: str, weights: str) -> int:
    sys.path.insert(0, ROOT)
    from ddpm_ms.device import select_device
    from ddpm_ms.pipeline import DiffusionPipeline

    select_device("CPU")
    pipe = DiffusionPipeline.from_pretrained(ckpt, weights=weights)
    arrays = {PREFIX + p.name: p.asnumpy() for p in pipe.model.trainable_params()}
    np.savez(out, **arrays)
    print(f"{out}: {len(arrays)} {pipe.loaded_weights} arrays of {pipe.checkpoint or pipe.source} "
          f"(step {pipe.checkpoint_step})")
    return 0


def import_(npz: str, like: str, out: str) -> int:
    """A run directory `out` with `like`'s config.json and one checkpoint whose live and EMA
    weights are both the npz's (step and optimizer state are dropped)."""
    sys.path.insert(0, ROOT)
    from ddpm_ms.config import Config
    from ddpm_ms.device import select_device
    from ddpm_ms.checkpoint import save_checkpoint
    from ddpm_ms.models import build_model

    import mindspore as ms

    select_device("CPU")
    if os.path.exists(out):
        raise SystemExit(f"{out} exists; choose a new run directory")
    cfg = Config.load(like)
    data = np.load(npz)
    models = build_model(cfg.model), build_model(cfg.model)
    names = {p.name for p in models[0].trainable_params()}
    given = {k[len(PREFIX):] for k in data.files if k.startswith(PREFIX)}
    if names != given:
        raise SystemExit(f"{npz} does not fit {like}'s model: missing {sorted(names - given)[:5]}, "
                         f"unexpected {sorted(given - names)[:5]}")
    for net in models:
        for p in net.trainable_params():
            p.set_data(ms.Tensor(data[PREFIX + p.name]))
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copy(os.path.join(like, "config.json"), out)
    path = save_checkpoint(models[0], os.path.join(out, "checkpoints", "final.ckpt"), ema_model=models[1],
                           config=cfg)
    print(f"{path}: {len(names)} parameters from {npz} (as both the live and the EMA weights)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="checkpoint (or run, or pipeline directory) -> npz")
    e.add_argument("ckpt", help="a checkpoint inside its run, a run directory or a pipeline directory")
    e.add_argument("out")
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    i = sub.add_parser("import", help="npz -> new run directory")
    i.add_argument("npz")
    i.add_argument("--like", required=True, help="a run directory of the same model config")
    i.add_argument("--out", required=True, help="the new run directory (must not exist)")
    a = ap.parse_args(argv)
    if a.command == "export":
        return export(a.ckpt, a.out, a.weights)
    return import_(a.npz, a.like, a.out)


if __name__ == "__main__":
    sys.exit(main())
