"""GPU proxy for the training-recipe search of issue 6 (optional; PyTorch is not a dependency).

A 100-minute CPU run answers one question a session. This script trains the same U-Net
(the PyTorch twin in benchmarks/pytorch_reference/: unet_torch.py, with diffusion_torch.py's loss
weights, learning rate and samplers) with the same diffusion recipe as `scripts/train.py` - cosine schedule, Huber
loss with p2 / Min-SNR weights, Adam with warm-up and cosine decay, global-norm clipping, EMA,
random flips - on a GPU (each update one replayed CUDA graph), several recipes at once, and writes each recipe's 10,000 samples
(DPM-Solver++ 2M, 20 steps, leading grid, x0 clipped, as ddpm_ms.sampling does; and its SDE
form) as uint8 arrays. Score them with the project's own classifier, on the CPU:

    python benchmarks/pytorch_reference/score_npz.py OUT/*.npz

The proxy only ranks recipes; the figures the README reports come from MindSpore runs
(scripts/train.py, scripts/evaluate.py). A recipe's CPU cost is its steps x batch x the
model's cost per image on the CPU (dim 28 costs 1.5x dim 16 there), which --plan prints.

    python research/recipe_search.py --data DIR --out OUT --recipes preset,minsnr5 [--jobs 8]
    python research/recipe_search.py ... --classifier W.npz   # score there (classifier_torch.py), JSON only
    python research/recipe_search.py ... --samplers dpmpp20,dpmpp_sde50,ddpm1000   # other samplers

To tell a training difference from a sampling one, weights cross over (benchmarks/pytorch_reference/ms_weights_io.py):
`--score-weights A.npz` samples and scores a ddpm_ms checkpoint's exported EMA weights here,
and `--save-weights` writes each recipe's EMA weights for scripts/evaluate.py to score.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TWIN = os.path.join(ROOT, "benchmarks", "pytorch_reference")  # the network, recipe and samplers in PyTorch
sys.path.insert(0, TWIN)
from diffusion_torch import (EpsFromV, cosine_alphas_cumprod, ddpm_ancestral, dpm_solver_pp,  # noqa: E402
                             guided_eps, loss_weights, lr_at, parse_sampler, read_idx_images, read_idx_labels)

# ddpm_ms.config.preset("fashion_mnist") as of issue 6; every recipe is this plus its overrides.
PRESET = dict(dim=16, dim_mults=(1, 2, 4), batch=32, steps=7500, lr=2e-3, warmup=500, lr_schedule="cosine",
              ema_decay=0.995, ema_every=10, p2_gamma=0.5, min_snr_gamma=0.0, loss="huber", flip=True,
              clip_grad=1.0, seed=0, objective="eps", adam_betas=(0.9, 0.999), tf32=True, ema_sweep=(),
              num_classes=0, cond_drop=0.1)

RECIPES = {
    "preset": {},
    # The preset since 2026-11-27 (b4d7048): no flips, class labels (10% dropped to "no class").
    # Sample it with guided samplers, e.g. dpmpp20tr-w1.25 (see parse_sampler).
    "cond": dict(flip=False, num_classes=10),
    "drop0.2": dict(cond_drop=0.2),
    "s10k": dict(steps=10000),  # `scripts/train.py --steps 10000`: about 2 hours on the CPU, warm-up unchanged
    "preset_seed1": dict(seed=1),
    "preset_seed2": dict(seed=2),
    "minsnr5": dict(p2_gamma=0.0, min_snr_gamma=5.0),
    "p2off": dict(p2_gamma=0.0),
    "l2": dict(loss="l2"),
    "lr4e-3": dict(lr=4e-3),
    "lr1e-3": dict(lr=1e-3),
    "b16": dict(batch=16, steps=15000, warmup=1000),
    "b64": dict(batch=64, steps=3750, warmup=250, lr=3e-3),
    "dim28": dict(dim=28, steps=5000, warmup=333),
    "dim24": dict(dim=24, steps=6000, warmup=400),
    "noflip": dict(flip=False),
    "v": dict(objective="v"),  # the network predicts v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022)
    "beta2_0.99": dict(adam_betas=(0.9, 0.99)),
    "x1.5": dict(steps=11250, warmup=750),  # about what 2 hours of the 2-core CPU buy (7,500 steps: 75 min)
    "x2": dict(steps=15000, warmup=1000),
    "x3": dict(steps=22500, warmup=1500),
    "x4": dict(steps=30000, warmup=2000),
    "x8": dict(steps=60000, warmup=4000),
    "fp32": dict(tf32=False),  # convolutions in full float32 (cuDNN's TF32 off), as on the CPU
    # The preset in full float32, with other EMA lengths kept alongside (--save-weights writes each).
    # The preset's EMA never reaches its cap of 0.995 (the warm-up's (1 + n) / (10 + n) is 0.988 at its
    # last update), so it averages about the last n / 9 updates. Each sweep value c keeps an average
    # with decay (1 + n) / (c + n), uncapped: about the last n / (c - 1) updates (c = 2: all of them).
    "fp32_ema_sweep": dict(tf32=False, ema_sweep=(2, 4, 20, 40)),
    "minsnr5_fp32": dict(p2_gamma=0.0, min_snr_gamma=5.0, tf32=False),
    "smoke": dict(steps=30, warmup=5, ema_every=1),  # checks the script end to end in seconds
}

# CPU cost per training image relative to dim 16 (docs/experiments/recipe_search.md, "Results":
# dim 28 trains 1.5x slower than dim 16 on the 2-core CPU); other widths interpolated.
CPU_COST = {16: 1.0, 24: 1.3, 28: 1.5, 32: 1.7}


def recipe(name: str) -> dict:
    """The preset with a recipe's overrides. "a+b" applies a's, then b's ("noflip+x2");
    "NAME@seedS" runs it with another seed ("noflip+minsnr5@seed1")."""
    parts, _, seed = name.partition("@seed")
    r = dict(PRESET)
    for base in parts.split("+"):
        if base not in RECIPES:
            raise SystemExit(f"unknown recipe {base!r}; choose from {sorted(RECIPES)} (join them with +)")
        r.update(RECIPES[base])
    r["name"] = name
    if seed:
        r["seed"] = int(seed)
    return r


def cpu_cost(r: dict) -> float:
    """The recipe's CPU training time as a multiple of the preset's."""
    return r["steps"] * r["batch"] * CPU_COST[r["dim"]] / (PRESET["steps"] * PRESET["batch"])


# The default pair is what every unconditional proxy row reports.
DEFAULT_SAMPLERS = ("dpmpp20", "dpmpp_sde20")
def draw(model, name: str, num: int, ab: np.ndarray, device) -> np.ndarray:
    """`num` uint8 (N, 28, 28) samples of sampler `name` (parse_sampler), from seed 1234, 2,000 at a
    time; a class-conditional model draws every class equally often (0, 1, ..., 9, 0, ...)."""
    import torch
    spec = parse_sampler(name)
    n_classes = getattr(model, "num_classes", 0)
    gen = torch.Generator(device=device).manual_seed(1234)
    chunks = []
    with torch.no_grad():
        for start in range(0, num, 2000):
            shape = (min(2000, num - start), 1, 28, 28)
            labels = (torch.arange(start, start + shape[0], device=device) % n_classes) if n_classes else None
            eps = guided_eps(model, spec, labels)
            x = (dpm_solver_pp(eps, shape, ab, spec["steps"], spec["kind"] == "dpmpp_sde", gen, device,
                               trailing=spec["trailing"]) if spec["kind"] != "ddpm"
                 else ddpm_ancestral(eps, shape, ab, gen, device))
            chunks.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()[:, 0])
    return np.concatenate(chunks)


def sample_and_score(ema, result: dict, out_dir: str, data_dir: str, num_samples: int, samplers, classifier,
                     save_npz: bool, device) -> dict:
    """Draw with each sampler, score (when a classifier is given), write NAME.npz, print the row."""
    tic = time.time()
    arrays = {name: draw(ema, name, num_samples, cosine_alphas_cumprod(), device) for name in samplers}
    result["sample_seconds"] = round(time.time() - tic, 1)
    if classifier:
        result["scores"] = {k: score(v, classifier, data_dir, device) for k, v in arrays.items()}
    if save_npz:  # the recipe and its timings travel inside the .npz ("meta", a JSON string)
        np.savez_compressed(os.path.join(out_dir, f"{result['name']}.npz"), meta=np.array(json.dumps(result)), **arrays)
    print(json.dumps(result), flush=True)
    return result


def score_weights(path: str, data_dir: str, out_dir: str, num_samples: int, samplers, classifier,
                  save_npz: bool) -> dict:
    """Sample and score weights trained elsewhere (ms_weights_io.py export of a ddpm_ms checkpoint)."""
    import torch
    from unet_torch import UNet, load_ms_weights, model_config
    device = "cuda" if torch.cuda.is_available() else "cpu"
    arrays = np.load(path)
    table = "w:class_emb.embedding_table"  # a class-conditional checkpoint's label embedding
    n_classes = arrays[table].shape[0] - 1 if table in arrays.files else 0
    ema = UNet(model_config(num_classes=n_classes)).to(device).eval()
    load_ms_weights(ema, arrays)
    result = dict(name="weights:" + os.path.basename(path))
    return sample_and_score(ema, result, out_dir, data_dir, num_samples, samplers, classifier, save_npz, device)


def train_one(r: dict, data_dir: str, out_dir: str, num_samples: int, classifier: str | None = None,
              save_npz: bool = True, samplers=DEFAULT_SAMPLERS, save_weights: bool = False) -> dict:
    import torch
    import torch.nn.functional as F
    from unet_torch import UNet, model_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = r["tf32"]  # torch's default: True (convolutions in TF32)
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default
    torch.manual_seed(r["seed"])
    rng = np.random.default_rng(r["seed"])
    images = read_idx_images(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    x_all = torch.tensor(images, device=device).float().div(127.5).sub(1.0)[:, None]
    y_all = torch.tensor(read_idx_labels(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")), device=device).long()
    n_classes = r["num_classes"]
    ab = cosine_alphas_cumprod()
    sqrt_ab = torch.tensor(np.sqrt(ab), device=device, dtype=torch.float32)
    sqrt_1mab = torch.tensor(np.sqrt(1 - ab), device=device, dtype=torch.float32)
    weights = torch.tensor(loss_weights(ab, r), device=device, dtype=torch.float32)

    net_config = model_config(dim=r["dim"], dim_mults=tuple(r["dim_mults"]), num_classes=n_classes)
    model, ema = UNet(net_config).to(device), UNet(net_config).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    graph = device == "cuda" and not os.environ.get("RECIPE_SEARCH_EAGER")
    # A tensor lr with capturable=True lets a captured CUDA graph read each step's rate.
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(r["lr"], device=device) if graph else r["lr"],
                           betas=tuple(r["adam_betas"]), eps=1e-8, capturable=graph)
    params, ema_params = list(model.parameters()), list(ema.parameters())
    # Extra averages with decay (1 + n) / (c + n) for c in ema_sweep (same cadence), to compare EMA
    # lengths in one run.
    sweep = {d: [p.detach().clone() for p in params] for d in r["ema_sweep"]}
    batch_idx = torch.zeros(r["batch"], dtype=torch.long, device=device)  # refilled every step

    def train_step():
        """One update on the rows batch_idx names (all on the GPU, no host sync: capturable)."""
        x0 = x_all[batch_idx]
        if r["flip"]:
            flip = torch.rand(r["batch"], device=device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, len(ab), (r["batch"],), device=device)
        noise = torch.randn_like(x0)
        alpha, sigma = sqrt_ab[t][:, None, None, None], sqrt_1mab[t][:, None, None, None]
        xt = alpha * x0 + sigma * noise
        if n_classes:  # labels, a cond_drop share of them replaced by "no class" (ddpm_ms.diffusion)
            y = y_all[batch_idx]
            y = torch.where(torch.rand(r["batch"], device=device) < r["cond_drop"], n_classes, y)
            pred = model(xt, t, y)
        else:
            pred = model(xt, t)
        target = alpha * noise - sigma * x0 if r["objective"] == "v" else noise
        if r["loss"] == "huber":
            per = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
        else:
            per = F.mse_loss(pred, target, reduction="none")
        loss = (per.flatten(1).mean(1) * weights[t]).mean()
        loss.backward()
        if r["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(params, r["clip_grad"], foreach=True)
        opt.step()
        return loss.detach()

    perm, pos = rng.permutation(len(x_all)), 0

    def next_batch(step):
        nonlocal perm, pos
        if pos + r["batch"] > len(perm):
            perm, pos = rng.permutation(len(x_all)), 0
        batch_idx.copy_(torch.as_tensor(perm[pos:pos + r["batch"]]), non_blocking=False)
        pos += r["batch"]
        for g in opt.param_groups:
            if graph:
                g["lr"].fill_(lr_at(step, r))
            else:
                g["lr"] = lr_at(step, r)

    tic = time.time()
    step, ema_updates, losses, cuda_graph = 0, 0, [], None

    def after(step, loss):
        nonlocal ema_updates
        if r["ema_decay"] and (step + 1) % r["ema_every"] == 0:
            n = ema_updates
            ema_updates += 1
            decay = min(r["ema_decay"], (1.0 + n) / (10.0 + n))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - decay)
                for d, shadow in sweep.items():
                    torch._foreach_lerp_(shadow, params, 1.0 - (1.0 + n) / (d + n))
        if step % 50 == 0:
            losses.append(float(loss))
        if step % 2500 == 0:
            print(f"step {step}: {time.time() - tic:.1f} s", flush=True)

    if graph:  # three eager warm-up updates on a side stream (they count as steps), then capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                next_batch(step)
                opt.zero_grad(set_to_none=True)
                after(step, train_step())
                step += 1
        torch.cuda.current_stream().wait_stream(side)
        # Grads are None at capture, so the captured backward writes them afresh on every replay.
        opt.zero_grad(set_to_none=True)
        try:
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                static_loss = train_step()
        except RuntimeError as e:  # fall back to eager updates
            print(f"CUDA graph capture failed ({e}); training eagerly", flush=True)
            cuda_graph = None
            opt.zero_grad(set_to_none=True)
    while step < r["steps"]:
        next_batch(step)
        if cuda_graph is not None:
            cuda_graph.replay()
            loss = static_loss
        else:
            opt.zero_grad(set_to_none=True)
            loss = train_step()
        after(step, loss)
        step += 1
    train_s = time.time() - tic

    result = dict(r, cuda_graph=cuda_graph is not None, train_seconds=round(train_s, 1), cpu_cost=round(cpu_cost(r), 3),
                  loss_curve=losses[::10], final_loss=float(np.mean(losses[-20:])))
    ema.eval()
    if save_weights:  # for ms_weights_io.py import: the EMA weights under MindSpore's names
        from unet_torch import ms_weights
        np.savez(os.path.join(out_dir, f"{r['name']}.weights.npz"), **ms_weights(ema))
        if sweep:  # and the raw weights, and each extra average through a spare model
            np.savez(os.path.join(out_dir, f"{r['name']}.raw.weights.npz"), **ms_weights(model))
            other = UNet(net_config).to(device)
        for d, shadow in sweep.items():
            with torch.no_grad():
                for p, v in zip(other.parameters(), shadow):
                    p.copy_(v)
            np.savez(os.path.join(out_dir, f"{r['name']}.ema{d}.weights.npz"), **ms_weights(other))
    if r["objective"] == "v":  # the samplers read eps: eps = sqrt(ab) v + sqrt(1 - ab) x_t
        ema = EpsFromV(ema, sqrt_ab, sqrt_1mab)
    if not num_samples:  # --num 0: training only (score the weights elsewhere, e.g. with evaluate.py)
        print(json.dumps(result), flush=True)
        return result
    return sample_and_score(ema, result, out_dir, data_dir, num_samples, samplers, classifier, save_npz, device)


_REAL_STATS = {}


def score(images: np.ndarray, classifier: str, data_dir: str, device: str = "cpu") -> dict:
    """FID against the test set, IS and class histogram, with classifier_torch's mirror of the
    project's classifier and ddpm_ms.metrics' float64 statistics (NumPy only, no MindSpore)."""
    sys.path.insert(0, ROOT)
    from classifier_torch import build
    from ddpm_ms.metrics.fid import feature_statistics, frechet_distance
    from ddpm_ms.metrics.scores import class_histogram, inception_score

    key = (classifier, data_dir, device)
    if key not in _REAL_STATS:  # the classifier and the test set's statistics, once per process
        classify = build(classifier, device)
        real, _ = classify(read_idx_images(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")))
        _REAL_STATS[key] = classify, feature_statistics(real)
    classify, real_stats = _REAL_STATS[key]
    feats, probs = classify(images)
    fid = frechet_distance(*feature_statistics(feats), *real_stats)
    return {"fid": round(fid, 2), "inception_score": round(inception_score(probs), 3),
            "class_histogram": [round(float(v), 4) for v in class_histogram(probs)], "num": len(images)}


def log_name(job: str) -> str:
    """A recipe's log file name; for a weights file, its base name."""
    return "weights_" + os.path.basename(job[len("weights:"):]) if job.startswith("weights:") else job


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with Fashion-MNIST's train-images-idx3-ubyte.gz")
    p.add_argument("--out", required=True, help="one NAME.npz per recipe goes here")
    p.add_argument("--logs", help="one NAME.log per recipe goes here (default: --out)")
    p.add_argument("--recipes", default="preset", help="comma-separated names (NAME@seedS for another seed)")
    p.add_argument("--jobs", type=int, default=8, help="recipes trained at once, one process each")
    p.add_argument("--num", type=int, default=10000, help="samples per recipe and sampler (0: train only, "
                                                             "with --save-weights)")
    p.add_argument("--classifier", help="classifier_torch.py export's npz: score on this machine and write "
                                        "OUT/results.jsonl instead of the samples")
    p.add_argument("--save-npz", action="store_true", help="with --classifier: keep the samples too")
    p.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS),
                   help="comma-separated sampler names (parse_sampler): dpmpp20, dpmpp_sde20, ddpm1000, "
                        "dpmpp20tr-w1.25 (trailing grid, guidance 1.25), dpmpp20tr-w2-i200_800 (guidance at "
                        "200 <= t <= 800 only)")
    p.add_argument("--save-weights", action="store_true",
                   help="also write each recipe's EMA weights, NAME.weights.npz (ms_weights_io.py import)")
    p.add_argument("--score-weights", default="",
                   help="comma-separated npz files (ms_weights_io.py export): sample and score them, no training")
    p.add_argument("--plan", action="store_true", help="print each recipe's CPU cost and stop")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.logs or args.out, exist_ok=True)
    samplers = [n for n in args.samplers.split(",") if n]
    for n in samplers:
        try:
            parse_sampler(n)
        except ValueError as e:
            p.error(str(e))
    save_npz = args.save_npz or not args.classifier
    if args.worker:
        if args.worker.startswith("weights:"):
            score_weights(args.worker[len("weights:"):], args.data, args.out, args.num, samplers, args.classifier,
                          save_npz)
        else:
            train_one(recipe(args.worker), args.data, args.out, args.num, args.classifier, save_npz, samplers,
                      args.save_weights)
        return 0
    names = [n for n in args.recipes.split(",") if n]
    for n in names:
        print(f"{n:>16}: {cpu_cost(recipe(n)):.2f}x the preset's CPU time", flush=True)
    names += ["weights:" + w for w in args.score_weights.split(",") if w]
    if args.plan:
        return 0
    running, pending, tic = [], list(names), time.time()
    while pending or running:
        while pending and len(running) < args.jobs:
            n = pending.pop(0)
            log = open(os.path.join(args.logs or args.out, f"{log_name(n)}.log"), "w")
            cmd = [sys.executable, __file__, "--data", args.data, "--out", args.out, "--num", str(args.num),
                   "--worker", n, "--samplers", args.samplers] + \
                  (["--classifier", args.classifier] if args.classifier else []) + \
                  (["--save-npz"] if args.save_npz else []) + (["--save-weights"] if args.save_weights else [])
            running.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for item in list(running):
            n, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"{time.time() - tic:7.1f} s  {n}: exit {proc.returncode}", flush=True)
                with open(os.path.join(args.logs or args.out, f"{log_name(n)}.log")) as f:
                    last = (f.read().strip().splitlines() or [""])[-1]
                if last.startswith("{"):
                    row = json.loads(last)
                    with open(os.path.join(args.out, "results.jsonl"), "a") as f:
                        f.write(last + "\n")
                    fids = {k: v["fid"] for k, v in row.get("scores", {}).items()}
                    trained = f"train {row['train_seconds']} s, loss {row['final_loss']:.4f}, " if "steps" in row else ""
                    print(f"{'':9}{n}: {trained}FID {fids}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
