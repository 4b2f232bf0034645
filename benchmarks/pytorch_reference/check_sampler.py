"""Does recipe_search.py's DPM-Solver++ draw what ddpm_ms's does? Both sample 16 images with 20
steps from the same starting noise and the same trained weights (a checkpoint's EMA weights):

    python benchmarks/pytorch_reference/check_sampler.py --ckpt RUN/checkpoints/final.ckpt

Run with the system python (MindSpore side); the torch side runs in $TORCH_VENV on the file it
writes. Measured on the Min-SNR run's step 4,000: the images agree to 2.3e-5 (mean 3e-7).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(os.environ.get("TORCH_VENV", os.path.join(HERE, "venv")), "bin", "python")
SHAPE = (16, 1, 28, 28)


def ms_side(ckpt: str) -> str:
    sys.path.insert(0, ROOT)
    from ddpm_ms.device import select_device
    from ddpm_ms.sampling import scheduler_for
    from ddpm_ms.sampling.loop import sample
    from ddpm_ms.training.checkpoint import load_model

    select_device("CPU")
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt)))
    model, cfg = load_model(run_dir, ckpt, weights="ema")
    x_T = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)
    images, _ = sample(model, scheduler_for("dpm++", cfg), SHAPE, num_inference_steps=20, x_T=x_T, progress=False)
    arrays = {"x_T": x_T, "images": images}
    arrays.update({"w:" + p.name: p.asnumpy() for p in model.trainable_params()})
    path = os.path.join(tempfile.mkdtemp(), "sampler.npz")
    np.savez(path, **arrays)
    return path


def torch_side(path: str) -> int:
    sys.path.insert(0, HERE)
    import torch

    from recipe_search import cosine_alphas_cumprod, dpm_solver_pp
    from unet_torch import UNet, load_ms_weights, model_config

    torch.set_num_threads(2)
    data = np.load(path)
    net = UNet(model_config()).eval()
    load_ms_weights(net, data)
    with torch.no_grad():
        x = dpm_solver_pp(net, SHAPE, cosine_alphas_cumprod(), 20, False, None, "cpu",
                          x_T=torch.from_numpy(data["x_T"])).numpy()
    diff = np.abs(x - data["images"])
    print(f"DPM-Solver++ 20: max |torch - MindSpore| {diff.max():.2e}, mean {diff.mean():.2e} (images in [-1, 1])")
    return 0 if diff.max() < 1e-3 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="a checkpoint of the fashion_mnist preset's U-Net, inside its run directory")
    ap.add_argument("--torch", metavar="NPZ", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        sys.exit(torch_side(a.torch))
    if not a.ckpt:
        ap.error("--ckpt is required")
    sys.exit(subprocess.call([VENV_PY, os.path.abspath(__file__), "--torch", ms_side(a.ckpt)]))


if __name__ == "__main__":
    main()
