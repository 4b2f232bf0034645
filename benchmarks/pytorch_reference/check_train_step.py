"""Does the PyTorch twin's update (unet_torch.py with diffusion_torch.py's loss weights and learning rate, as
research/recipe_search.py trains) do what scripts/train.py's does? Three updates of the
preset's recipe (p2-weighted Huber loss, global-norm clipping, Adam with the warm-up/cosine
rate) from the same weights on the same batches, t and noise, in MindSpore and in PyTorch:

    python benchmarks/pytorch_reference/check_train_step.py [--lr 2e-3 --warmup 0] [--min-snr-gamma 5]
        [--from-ckpt RUN/checkpoints/final.ckpt]   # from trained weights instead of a fresh init

Run with the system python (MindSpore side); the torch side runs in $TORCH_VENV on the file it
writes. Prints the loss, the gradient norm and the largest parameter difference after each update.
Measured: the same loss and gradient norm to 5-6 digits, and the same weights after 3 updates
once torch's Adam takes MindSpore's placement of eps (see torch_side).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(os.environ.get("TORCH_VENV", os.path.join(HERE, "venv")), "bin", "python")
UPDATES = int(os.environ.get("CHECK_UPDATES", 3))


def ms_side(args) -> str:
    sys.path.insert(0, ROOT)
    import mindspore as ms

    from ddpm_ms.presets import preset
    from ddpm_ms.device import select_device
    from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
    from ddpm_ms.models import build_model
    from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
    from ddpm_ms.training.step import make_train_step

    select_device("CPU")
    ms.set_seed(0)
    cfg = preset("fashion_mnist")
    cfg.model.num_classes = 0  # unet_torch.py is the unconditional network
    d, t = cfg.diffusion, cfg.train
    model = build_model(cfg.model)
    if args.from_ckpt:  # a trained model's raw weights: does the update still agree late in a run?
        from ddpm_ms.pipeline import DiffusionPipeline
        trained = DiffusionPipeline.from_pretrained(args.from_ckpt, weights="raw").model
        values = {p.name: p.asnumpy() for p in trained.trainable_params()}
        for p in model.trainable_params():
            p.set_data(ms.Tensor(values[p.name]))
    names = [p.name for p in model.trainable_params()]  # before GaussianDiffusion prefixes them
    initial = [p.asnumpy().copy() for p in model.trainable_params()]
    schedule = NoiseSchedule.from_config(d)
    diffusion = GaussianDiffusion(model, schedule, d.objective, d.loss_type, d.p2_gamma, d.p2_k, args.min_snr_gamma)
    lr = WarmupSchedule(args.lr, t.lr_schedule, args.warmup, t.steps)
    step = make_train_step(diffusion, build_optimizer(model.trainable_params(), lr), clip_grad=t.clip_grad)

    sys.path.insert(0, HERE)
    from diffusion_torch import read_idx_images
    images = read_idx_images(os.path.join(ROOT, "data", "fashion-mnist", "train-images-idx3-ubyte.gz"))
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(UPDATES):
        x0 = (images[rng.choice(len(images), t.batch_size, replace=False)].astype(np.float32) / 127.5 - 1)[:, None]
        tt = rng.integers(0, d.timesteps, t.batch_size).astype(np.int32)
        noise = rng.standard_normal(x0.shape).astype(np.float32)
        loss, norm, rate, _ = step.update(ms.Tensor(x0), ms.Tensor(tt), ms.Tensor(noise))
        arrays.update({f"x0_{i}": x0, f"t_{i}": tt, f"noise_{i}": noise})
        arrays[f"out_{i}"] = np.array([float(loss.asnumpy()), float(norm.asnumpy()), float(rate.asnumpy())])
    for name, w0, p in zip(names, initial, model.trainable_params()):
        arrays["w0:" + name] = w0
        arrays["w:" + name] = p.asnumpy()
    recipe = dict(lr=args.lr, warmup=args.warmup, steps=t.steps, lr_schedule=t.lr_schedule, p2_gamma=d.p2_gamma,
                  min_snr_gamma=args.min_snr_gamma, loss=d.loss_type, clip_grad=t.clip_grad)
    arrays["meta"] = np.array(json.dumps(recipe))
    path = os.path.join(tempfile.mkdtemp(), "train_step.npz")
    np.savez(path, **arrays)
    return path


def torch_side(path: str) -> int:
    sys.path.insert(0, HERE)
    import torch
    import torch.nn.functional as F

    from diffusion_torch import cosine_alphas_cumprod, loss_weights, lr_at
    from unet_torch import UNet, load_ms_weights, model_config, ms_name_to_torch

    torch.set_num_threads(2)
    data = np.load(path)
    r = json.loads(str(data["meta"]))
    net = UNet(model_config())
    load_ms_weights(net, data, prefix="w0:")
    opt = torch.optim.Adam(net.parameters(), lr=r["lr"], betas=(0.9, 0.999), eps=1e-8)
    ab = cosine_alphas_cumprod()
    sqrt_ab, sqrt_1mab = torch.tensor(np.sqrt(ab)).float(), torch.tensor(np.sqrt(1 - ab)).float()
    weights = torch.tensor(loss_weights(ab, r)).float()
    ok = True
    for i in range(UPDATES):
        x0, noise = torch.from_numpy(data[f"x0_{i}"]), torch.from_numpy(data[f"noise_{i}"])
        t = torch.from_numpy(data[f"t_{i}"]).long()
        xt = sqrt_ab[t][:, None, None, None] * x0 + sqrt_1mab[t][:, None, None, None] * noise
        pred = net(xt, t)
        per = F.smooth_l1_loss(pred, noise, reduction="none") if r["loss"] == "huber" else (pred - noise) ** 2
        loss = (per.flatten(1).mean(1) * weights[t]).mean()
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), r["clip_grad"])
        for g in opt.param_groups:
            g["lr"] = lr_at(i, r)
            # MindSpore's nn.Adam adds eps to sqrt(v) before the bias correction, torch after it:
            # torch with eps / sqrt(1 - beta2^k) at update k takes MindSpore's step. The difference
            # matters only for weights with gradients near eps in the first ~100 updates (inside
            # the preset's warm-up); research/recipe_search.py keeps torch's constant eps.
            g["eps"] = 1e-8 / np.sqrt(1.0 - 0.999 ** (i + 1))
        opt.step()
        ms_loss, ms_norm, ms_lr = data[f"out_{i}"]
        print(f"update {i}: loss {float(loss.detach()):.6f} (MindSpore {ms_loss:.6f}), grad norm {float(norm):.5f} "
              f"({ms_norm:.5f}), lr {lr_at(i, r):.3g} ({ms_lr:.3g})")
        ok &= abs(loss.item() - ms_loss) < 1e-4 * max(1, ms_loss) and abs(float(norm) - ms_norm) < 1e-3 * ms_norm
    worst, worst_name, moved, rows = 0.0, None, 0.0, []
    ms_names = {ms_name_to_torch(k[2:]): k[2:] for k in data.files if k.startswith("w:")}
    for name, p in net.named_parameters():
        ms_name = ms_names[name]
        step_ms = data["w:" + ms_name] - data["w0:" + ms_name]
        diff = float(np.abs(p.detach().numpy() - data["w:" + ms_name]).max())
        moved = max(moved, float(np.abs(step_ms).max()))
        step_t = p.detach().numpy() - data["w0:" + ms_name]
        rel = np.abs(step_t - step_ms) / (np.abs(step_ms) + 1e-12)
        rows.append((float(np.median(rel)), float((rel > 0.1).mean()), name))
        if diff > worst:
            worst, worst_name = diff, name
    if os.environ.get("CHECK_VERBOSE"):
        for row in sorted(rows)[-8:]:
            print(f"  {row[2]:45s} median |step diff| / |step| {row[0]:.3g}, share over 10%: {row[1]:.3f}")
    print(f"after {UPDATES} updates: largest weight change {moved:.3g}; largest |torch - MindSpore| {worst:.3g} "
          f"({worst_name})")
    ok &= worst < 0.05 * moved
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=0, help="warm-up steps (0: the full rate from the first update)")
    ap.add_argument("--min-snr-gamma", type=float, default=0.0)
    ap.add_argument("--from-ckpt", metavar="CKPT", help="start from this checkpoint's raw weights instead of a fresh init")
    ap.add_argument("--torch", metavar="NPZ", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch:
        sys.exit(torch_side(a.torch))
    path = ms_side(a)
    sys.exit(subprocess.call([VENV_PY, os.path.abspath(__file__), "--torch", path]))


if __name__ == "__main__":
    main()
