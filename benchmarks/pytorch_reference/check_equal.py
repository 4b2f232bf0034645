"""Equivalence check between ddpm_ms.models.UNet (MindSpore) and unet_torch.UNet (PyTorch), or,
with --model dit, between ddpm_ms.models.DiT and dit_torch.DiT (the dit_mnist preset's size).

Run with the system python (MindSpore side); it writes ref_dim{D}_{block}.npz into a temporary directory with the
MindSpore weights, a fixed input, the output and the gradients of sum(out * g) w.r.t. every
parameter, then runs the torch side in the venv on that file:

    python benchmarks/pytorch_reference/check_equal.py [--dim 16] [--block resnet] [--num-classes 10]

With --num-classes the networks are class-conditional and the input carries labels, "no class"
among them (their label embeddings are scaled to unit size first, so that a wrong label shows).
For the DiT every parameter is redrawn from N(0, 0.05^2) first: its adaLN-Zero layers start at zero,
which would make the output 0 and hide every difference.

The torch side alone:  $TORCH_VENV/bin/python benchmarks/pytorch_reference/check_equal.py --torch FILE.npz
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
VENV_PY = os.path.join(os.environ.get("TORCH_VENV", os.path.join(HERE, "venv")), "bin", "python")


def ms_side(dim: int, block: str, num_classes: int = 0, model: str = "unet") -> str:
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root
    import mindspore as ms
    from ddpm_ms.device import select_device
    from ddpm_ms.presets import preset
    from ddpm_ms.models import build_model, count_parameters

    select_device("CPU")
    ms.set_seed(0)
    cfg = preset("dit_mnist" if model == "dit" else "fashion_mnist").model
    cfg.num_classes = num_classes
    if model != "dit":
        cfg.dim, cfg.block = dim, block
    net = build_model(cfg)
    net.set_train(False)
    rng = np.random.default_rng(123)
    if model == "dit":  # away from adaLN-Zero's zeros, so that every layer shows in the output
        for p in net.trainable_params():
            p.set_data(ms.Tensor(rng.normal(0, 0.05, p.shape).astype(np.float32)))
    if num_classes:  # unit-scale labels, so that a wrong row would change the output visibly
        net.class_emb.embedding_table.set_data(ms.Tensor(
            rng.standard_normal(net.class_emb.embedding_table.shape).astype(np.float32)))
    x = rng.uniform(-1, 1, size=(4, 1, 28, 28)).astype(np.float32)
    t = np.array([0, 17, 500, 999], dtype=np.int32)
    y = np.array([3, num_classes, 0, num_classes - 1] if num_classes else [0, 0, 0, 0], dtype=np.int32)
    g = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    xt, tt, gt, yt = ms.Tensor(x), ms.Tensor(t.astype(np.float32)), ms.Tensor(g), ms.Tensor(y)
    out = (net(xt, tt, yt) if num_classes else net(xt, tt)).asnumpy()

    params = net.trainable_params()

    def fn(a, b):
        return ((net(a, b, yt) if num_classes else net(a, b)) * gt).sum()

    _, grads = ms.value_and_grad(fn, None, params)(xt, tt)
    arrays = {"x": x, "t": t, "y": y, "out": out}
    for p, gr in zip(params, grads):
        arrays["w:" + p.name] = p.asnumpy()
        arrays["g:" + p.name] = gr.asnumpy()
    arrays["gout"] = g
    arrays["meta"] = np.array(json.dumps({"arch": cfg.arch, "dim": dim, "block": block, "ms_params": int(count_parameters(net)),
                                          "mindspore": ms.__version__, "model_config": {
                                              k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in vars(cfg).items()}}))
    path = os.path.join(tempfile.mkdtemp(), f"ref_{cfg.arch}_dim{dim}_{block}.npz")
    np.savez(path, **arrays)
    print(f"[ms] {cfg.arch} dim={dim} block={block} params={count_parameters(net)} out shape={out.shape} -> {path}")
    return path


def torch_side(path: str) -> dict:
    sys.path.insert(0, HERE)
    import torch
    from unet_torch import UNet, count_parameters, ms_name_to_torch

    torch.set_num_threads(2)
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    if meta.get("arch") == "dit":
        from dit_torch import DiT
        net = DiT(meta["model_config"]).eval()
    else:
        net = UNet(meta["model_config"]).eval()
    sd = net.state_dict()
    ms_names = [k[2:] for k in data.files if k.startswith("w:")]
    mapped = {ms_name_to_torch(n): n for n in ms_names}
    missing = sorted(set(sd) - set(mapped))
    unexpected = sorted(set(mapped) - set(sd))
    assert not missing and not unexpected, f"missing {missing} unexpected {unexpected}"
    new_sd = {}
    for tk, mk in mapped.items():
        w = torch.from_numpy(data["w:" + mk])
        assert w.shape == sd[tk].shape, (tk, w.shape, sd[tk].shape)
        new_sd[tk] = w
    net.load_state_dict(new_sd, strict=True)

    x = torch.from_numpy(data["x"])
    t = torch.from_numpy(data["t"]).float()
    y = torch.from_numpy(data["y"]).long() if meta["model_config"].get("num_classes") else None
    out = net(x, t, y)
    (out * torch.from_numpy(data["gout"])).sum().backward()
    ref = data["out"]
    diff = float(np.abs(out.detach().numpy() - ref).max())
    grad_abs, grad_rel = 0.0, 0.0
    worst = None
    for n, p in net.named_parameters():
        ms_n = mapped[n]
        gref = data["g:" + ms_n]
        d = float(np.abs(p.grad.numpy() - gref).max())
        r = d / (float(np.abs(gref).max()) + 1e-12)
        if r > grad_rel:
            grad_rel, worst = r, n
        grad_abs = max(grad_abs, d)
    res = {"arch": meta.get("arch", "unet"), "dim": meta["dim"], "block": meta["block"], "ms_params": meta["ms_params"],
           "torch_params": count_parameters(net), "n_tensors": len(mapped),
           "out_max_abs": float(np.abs(ref).max()), "max_abs_diff_out": diff,
           "max_abs_diff_grad": grad_abs, "max_rel_diff_grad": grad_rel, "worst_grad_param": worst,
           "torch": torch.__version__}
    res["pass"] = bool(diff < 1e-4 and res["ms_params"] == res["torch_params"])
    print(json.dumps(res))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--block", default="resnet", choices=["resnet", "convnext"])
    ap.add_argument("--num-classes", type=int, default=0, help="class-conditional networks (0: unconditional)")
    ap.add_argument("--model", choices=["unet", "dit"], default="unet")
    ap.add_argument("--torch", metavar="NPZ", help="run only the torch side on this file")
    a = ap.parse_args()
    if a.torch:
        res = torch_side(a.torch)
        sys.exit(0 if res["pass"] else 1)
    path = ms_side(a.dim, a.block, a.num_classes, a.model)
    sys.exit(subprocess.call([VENV_PY, os.path.abspath(__file__), "--torch", path]))


if __name__ == "__main__":
    main()
