"""Does the PyTorch twin's DPM-Solver++ (diffusion_torch.py, which research/recipe_search.py samples with)
draw what ddpm_ms's does? Both sample 16 images with 20
steps from the same starting noise and the same trained weights (a checkpoint's EMA weights), on
ddpm_ms's default grid for the sampler started at T-1 (--lambda-min-clipped none); a class-conditional checkpoint draws labels 0..9, 0..5 with
its run's guidance scale (or --guidance-scale):

    python benchmarks/pytorch_reference/check_sampler.py --ckpt RUN/checkpoints/final.ckpt [--guidance-scale W]

Run with the system python (MindSpore side); the torch side runs in $TORCH_VENV on the file it
writes. Measured on the Min-SNR run's step 4,000 (leading grid): the images agree to 2.3e-5 (mean 3e-7);
on the trailing grid (2026-11-27): 1.6e-3 (mean 6.5e-6) unconditional, 2.1e-4 (mean 2.9e-6) guided at w = 2.
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


def ms_side(ckpt: str, guidance_scale=None) -> str:
    sys.path.insert(0, ROOT)
    from ddpm_ms.device import select_device
    from ddpm_ms.pipeline import DiffusionPipeline

    select_device("CPU")
    pipe = DiffusionPipeline.from_pretrained(ckpt, weights="ema")
    x_T = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)
    # The proxy's grids start at T-1 (leading or trailing): compare on those, without ddpm_ms's
    # default cut at log-SNR -4.3.
    scheduler = pipe.scheduler("dpm++", lambda_min_clipped=-np.inf)
    n = pipe.num_classes
    labels = np.arange(SHAPE[0]) % n if n else None
    w = (pipe.sampling.guidance_scale if guidance_scale is None else guidance_scale) if n else 1.0
    # Guided at every step, without rescale: the proxy's sampler name below says so (no -iLO_HI).
    guidance = pipe.guidance(w, 0.0, "all") if n else None
    images = pipe(SHAPE[0], class_labels=labels, scheduler=scheduler, num_inference_steps=20, latents=x_T,
                  batch_size=SHAPE[0], progress=False, guidance=guidance).images
    trailing = scheduler.timestep_spacing == "trailing"
    name = f"dpmpp20{'tr' if trailing else ''}" + (f"-w{w:g}" if n else "")
    print(f"MindSpore: {name} ({scheduler.timestep_spacing} grid, w = {w:g}, {n} classes)")
    arrays = {"x_T": x_T, "images": images, "sampler": np.array(name)}
    arrays.update({"w:" + p.name: p.asnumpy() for p in pipe.model.trainable_params()})
    path = os.path.join(tempfile.mkdtemp(), "sampler.npz")
    np.savez(path, **arrays)
    return path


def torch_side(path: str) -> int:
    sys.path.insert(0, HERE)
    import torch

    from diffusion_torch import cosine_alphas_cumprod, dpm_solver_pp, guided_eps, parse_sampler
    from unet_torch import UNet, load_ms_weights, model_config

    torch.set_num_threads(2)
    data = np.load(path)
    table = "w:class_emb.embedding_table"
    n = data[table].shape[0] - 1 if table in data.files else 0
    net = UNet(model_config(num_classes=n)).eval()
    load_ms_weights(net, data)
    spec = parse_sampler(str(data["sampler"]))
    labels = torch.arange(SHAPE[0]) % n if n else None
    with torch.no_grad():
        x = dpm_solver_pp(guided_eps(net, spec, labels), SHAPE, cosine_alphas_cumprod(), 20, False, None, "cpu",
                          x_T=torch.from_numpy(data["x_T"]), trailing=spec["trailing"]).numpy()
    diff = np.abs(x - data["images"])
    print(f"{data['sampler']}: max |torch - MindSpore| {diff.max():.2e}, mean {diff.mean():.2e} (images in [-1, 1])")
    # The trailing grid's first step divides the model's output by sqrt(alpha-bar(999)) = 4.9e-5, which
    # turns float32 rounding (1e-7) into about 2e-3 in a pixel's x0 estimate: allow that in the worst pixel.
    return 0 if diff.max() < 1e-2 and diff.mean() < 1e-4 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="a checkpoint of the fashion_mnist preset's U-Net inside its run directory, the "
                                   "run directory, or a pipeline directory (DiffusionPipeline.from_pretrained)")
    ap.add_argument("--guidance-scale", type=float, help="guidance w for a class-conditional checkpoint "
                                                         "(default: its run's)")
    ap.add_argument("--torch", metavar="NPZ", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        sys.exit(torch_side(a.torch))
    if not a.ckpt:
        ap.error("--ckpt is required")
    sys.exit(subprocess.call([VENV_PY, os.path.abspath(__file__), "--torch", ms_side(a.ckpt, a.guidance_scale)]))


if __name__ == "__main__":
    main()
