"""PyTorch reference benchmark for the ddpm_ms U-Net (see unet_torch.py) or, with --model dit, the
dit_mnist DiT (dit_torch.py), CPU, 2 threads.

    $TORCH_VENV/bin/python benchmarks/pytorch_reference/bench_torch.py [--model unet|dit] [--dim 16] [--seconds 20] [--only train32|train128|sample64]
        [--compile] [--bf16]

The DiT is class-conditional as its preset is: each step draws labels from the ten classes, 10% of
them replaced by "no class".

Measurements (each in its own subprocess, so peak RSS belongs to that measurement alone):
  train_b32 / train_b128: one training step = draw t ~ U{0..999} and noise ~ N(0, 1), x_t = sqrt(ab) x0 +
      sqrt(1 - ab) noise (cosine schedule, T = 1000), eps = UNet(x_t, t), per-sample mean of smooth_l1
      (Huber, beta 1) against the noise, times p2 weights (k + snr)^-gamma (k 1, gamma 0.5), mean,
      backward, Adam(lr 1e-3) step. x0 is a fixed random batch in [-1, 1] (no data pipeline), as in
      ddpm_ms's scripts/bench.py.
  sample_b64: one UNet forward at batch 64 under torch.inference_mode(), t walking down from 999
      (img_per_s = images denoised by one step per second = batch x model calls / s).
--compile runs the model through torch.compile (default inductor backend; the first step, which
compiles, is reported as first_step_ms and never timed); --bf16 runs the model and the loss under
torch.autocast("cpu", dtype=torch.bfloat16), what a PyTorch user turns on for bfloat16 on CPU.
Each: `--warmup` untimed steps (3), then timed steps until `--seconds` have passed (at least
`--min-steps`). img_per_s = total images / total timed seconds; also the median step time.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {"train32": ("train", 32), "train128": ("train", 128), "sample64": ("sample", 64)}
KEYS = {"train32": "train_b32", "train128": "train_b128", "sample64": "sample_b64"}


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024 if sys.platform != "darwin" else rss / 2 ** 20, 1)


def rss_mb():
    """Resident set size now, in MB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024, 1)
    except (OSError, StopIteration):
        return None


def cosine_schedule(timesteps=1000, s=0.008, max_beta=0.999):
    """Same as ddpm_ms.diffusion.schedule.cosine_betas, in float64, then the derived constants."""
    import numpy as np
    x = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64) / timesteps
    ac = np.cos((x + s) / (1 + s) * math.pi / 2) ** 2
    ac = ac / ac[0]
    betas = np.clip(1 - ac[1:] / ac[:-1], 0, max_beta)
    alphas_cumprod = np.cumprod(1.0 - betas)
    return alphas_cumprod


def _timed_loop(run_once, seconds, min_steps):
    times = []
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        tic = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - tic)
    return times


def worker(args) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from unet_torch import UNet, count_parameters, model_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kind, batch = TASKS[args.only]
    if args.model == "dit":
        from dit_torch import DIT_MNIST, DiT
        model, n_labels = DiT(DIT_MNIST), DIT_MNIST["num_classes"] + 1
    else:
        model, n_labels = UNet(model_config(dim=args.dim)), 0
    size = {"dim": args.dim} if args.model == "unet" else {k: DIT_MNIST[k] for k in ("patch_size", "hidden_size", "depth")}
    info = {"model": args.model, **size, "params": count_parameters(model), "batch_size": batch,
            "threads": torch.get_num_threads(), "compile": args.compile, "bf16": args.bf16}
    net = torch.compile(model) if args.compile else model

    def precision():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def labels():  # as the preset trains: each label replaced by "no class" with probability 0.1
        if not n_labels:
            return None
        y = torch.randint(0, n_labels - 1, (batch,))
        return torch.where(torch.rand(batch) < 0.1, torch.full_like(y, n_labels - 1), y)
    T = 1000
    ac = cosine_schedule(T)
    sqrt_ac = torch.tensor(np.sqrt(ac), dtype=torch.float32)
    sqrt_1m_ac = torch.tensor(np.sqrt(1.0 - ac), dtype=torch.float32)
    p2 = torch.tensor((1.0 + ac / (1.0 - ac)) ** -0.5, dtype=torch.float32)  # (k + snr)^-gamma
    shape = (batch, 1, 28, 28)

    if kind == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x0 = torch.rand(shape) * 2 - 1

        def run_once():
            t = torch.randint(0, T, (batch,))
            noise = torch.randn(shape)
            x_t = sqrt_ac[t].view(-1, 1, 1, 1) * x0 + sqrt_1m_ac[t].view(-1, 1, 1, 1) * noise
            with precision():
                pred = net(x_t, t.float(), labels())
                loss = F.smooth_l1_loss(pred.float(), noise, reduction="none", beta=1.0).mean(dim=(1, 2, 3))
                loss = (loss * p2[t]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv}")
    else:
        model.eval()
        x = torch.randn(shape)
        state = {"step": T - 1}

        def run_once():
            with torch.inference_mode(), precision():
                t = torch.full((batch,), float(state["step"]))
                out = net(x, t, labels())
                float(out[0, 0, 0, 0])  # touch the result
            state["step"] = state["step"] - 1 if state["step"] > 0 else T - 1

    built = rss_mb()  # after import and model build: peak minus this is what the step costs
    tic = time.perf_counter()
    run_once()
    first = time.perf_counter() - tic
    for _ in range(max(args.warmup - 1, 0)):
        run_once()
    times = _timed_loop(run_once, args.seconds, args.min_steps)
    total = float(np.sum(times))
    res = {**info, "img_per_s": round(batch * len(times) / total, 2),
           "img_per_s_median": round(batch / float(np.median(times)), 2),
           "step_ms_median": round(1000 * float(np.median(times)), 1),
           "first_step_ms": round(1000 * first, 1),
           "calls": len(times), "seconds": round(total, 1), "peak_rss_mb": peak_rss_mb(), "rss_after_build_mb": built,
           "peak_over_build_mb": round(peak_rss_mb() - built, 1) if built is not None else None}
    if kind == "sample":
        res["model_calls_per_s"] = round(len(times) / total, 2)
    return res


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, {platform.system()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["unet", "dit"], default="unet")
    ap.add_argument("--dim", type=int, default=16, help="U-Net width")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (the first included)")
    ap.add_argument("--min-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(TASKS), help="run just one measurement")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    import torch
    out = {}
    for task in ([args.only] if args.only else list(TASKS)):
        print(f"[bench_torch] {task} dim {args.dim} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--only", task, "--dim", str(args.dim),
               "--model", args.model,
               "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--min-steps", str(args.min_steps),
               "--threads", str(args.threads)] + ["--compile"] * args.compile + ["--bf16"] * args.bf16
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[KEYS[task]] = {"error": f"worker exited with {proc.returncode}",
                               "stderr_tail": "\n".join(proc.stderr.strip().splitlines()[-15:])}
        else:
            out[KEYS[task]] = json.loads(proc.stdout.strip().splitlines()[-1])
    params = next((v["params"] for v in out.values() if "params" in v), None)
    out.update({"torch": torch.__version__, "model": args.model, "dim": args.dim if args.model == "unet" else None, "params": params, "threads": args.threads,
                "seconds": args.seconds, "machine": machine()})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
