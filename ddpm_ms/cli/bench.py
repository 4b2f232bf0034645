"""python scripts/bench.py train|sample|all [flags]: measure speed and memory.

Each measurement (graph or pynative mode, one batch size) runs in its own Python process, so
compile time and peak resident memory belong to that measurement alone. Training times the
update the Trainer runs, through its HostLoop (timesteps, noise and label drops drawn on the
host, forward, loss, gradients, clipping, the Adam update and the EMA; `--variants` compares it
with and without clipping, EMA and gradient accumulation); sampling times the `sample()` loop of
each scheduler (one compiled model call and one scheduler update per step). The data pipeline
is left out: x0 is a fixed random batch.

For sampling, `img_per_s` counts finished images per second at the sampler's usual step count
(DDPM 1000, DDIM 50, DPM-Solver++ 20), `model_calls_per_s` the loop's steps per second, and
`denoised_img_per_s` (batch x model calls/s) the figure that compares with a framework's
inference throughput. `loop_ms_per_step` times the loop without the model (scheduler update,
noise, timestep tensor); `loop_overhead_pct` is its share of a step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from ddpm_ms.cli.args import set_model_fields
from ddpm_ms.registry import BACKBONES, SAMPLERS

MODES = ("graph", "pynative")
DEFAULT_BATCH = {"train": 32, "sample": 64}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024 if sys.platform != "darwin" else rss / 2 ** 20, 1)


def rss_mb() -> float | None:
    """Resident set size of this process now, in MB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024, 1)
    except (OSError, StopIteration):
        return None


# -- one measurement, in this process ------------------------------------------------------------
def _build(args):
    import mindspore as ms
    from ddpm_ms.presets import preset
    from ddpm_ms.device import select_device
    from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
    from ddpm_ms.models import build_model, count_parameters

    device = select_device(args.device)
    if args.mode == "pynative":
        ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = preset(args.preset)
    set_model_fields(cfg.model, args)
    ms.set_seed(0)
    model = build_model(cfg.model)
    precision = {}
    if args.amp_dtype == "bfloat16":  # as `train.py --amp O1 --amp-dtype bfloat16` runs it
        from ddpm_ms.training.amp import apply_amp, resolve_amp
        level, dtype, note = resolve_amp("O1", "bfloat16", device)
        apply_amp(model, level, dtype, device)
        precision = {"amp": level, **({"amp_note": note} if note else {})}
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    d = cfg.diffusion
    diffusion = GaussianDiffusion(model, schedule, d.objective, d.loss_type, d.p2_gamma, d.p2_k, d.min_snr_gamma)
    m = cfg.model
    shape = {flag[2:].replace("-", "_"): getattr(m, field) for flag, (field, _) in type(m).flags.items()}
    info = {"device": device, "preset": args.preset, "arch": m.arch, **shape, "params": count_parameters(model),
            "amp_dtype": args.amp_dtype, **precision, "rss_after_build_mb": rss_mb()}
    return cfg, model, schedule, diffusion, info


def _timed_loop(run_once, seconds, min_steps=3):
    """Call `run_once` (which must block until its result is ready) until `seconds` have passed;
    return the per-call wall times."""
    times = []
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        tic = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - tic)
    return times


TRAIN_VARIANTS = {
    # name: (clip the gradient norm, average the EMA every n updates (0: no EMA; None: as the
    # preset does, cfg.train.ema_update_every), micro-batches per update)
    "plain": (False, 0, 1),        # forward, loss, backward, Adam (the step before EMA existed)
    "clip": (True, 0, 1),          # + global-norm clipping
    "ema1": (True, 1, 1),          # + the EMA average after every update
    "default": (True, None, 1),    # + the EMA at the preset's cadence: what the preset trains with
    "accum4": (True, None, 4),     # + 4 micro-batches per update (img/s counts every micro-batch)
}


def measure_train(args) -> dict:
    """One optimizer update as the Trainer runs it, through the same HostLoop: host-drawn
    timesteps, noise and label drops, the compiled TrainStep (micro-batches, then the update)
    and the EMA's compiled average."""
    import itertools

    import mindspore as ms
    import numpy as np
    from ddpm_ms.models import build_model
    from ddpm_ms.training import EMA, HostLoop, TrainStep, WarmupSchedule, build_optimizer

    cfg, model, schedule, diffusion, info = _build(args)
    clip, ema_every, accum = TRAIN_VARIANTS[args.variant]
    t_cfg = cfg.train
    if ema_every is None:
        ema_every = t_cfg.ema_update_every if t_cfg.ema_decay else 0
    optimizer = build_optimizer(model.trainable_params(), WarmupSchedule(t_cfg.lr), "adam")
    jit = args.mode == "graph"
    step = TrainStep(diffusion, optimizer, grad_accum=accum, clip_grad=t_cfg.clip_grad if clip else None, jit=jit)
    ema = EMA(model, build_model(cfg.model), t_cfg.ema_decay or 0.999, update_every=ema_every, jit=jit) if ema_every else None
    rng = np.random.default_rng(0)
    shape = (args.batch_size, cfg.model.channels, *cfg.model.image_size)
    x0 = ms.Tensor(rng.uniform(-1, 1, shape).astype(np.float32))
    n_classes = cfg.model.num_classes  # a class-conditional preset trains on (image, label) batches
    labels = (ms.Tensor(rng.integers(0, n_classes, (shape[0],), dtype=np.int32)),) if n_classes else ()
    host = HostLoop(step, rng, schedule.timesteps, n_classes, cfg.diffusion.cond_drop_prob, ema)
    batches = itertools.repeat((x0, *labels))
    updates = [0]

    def run_once():  # raises NonFiniteLoss (a FloatingPointError) on a NaN or Inf loss
        updates[0] += 1
        host.run(batches, updates[0])

    tic = time.perf_counter()
    run_once()
    first = time.perf_counter() - tic
    _timed_loop(run_once, 0, min_steps=args.warmup)
    if args.profile:
        return {**info, **profile(run_once, args.profile)}
    times = _timed_loop(run_once, args.seconds)
    return {**_summary(info, times, first, args.batch_size * accum, args.batch_size), "variant": args.variant,
            "grad_accum": accum, "clip": clip, "ema_every": ema_every}


def measure_sample(args) -> dict:
    """One sampler's loop: the chain at the sampler's usual step count (DDPM's 1000 steps are timed
    on a respaced 20-step chain, whose steps cost the same), then the model call alone and the
    loop without the model (scheduler updates, noise, timestep tensors) for the loop's overhead."""
    import mindspore as ms
    import numpy as np
    from ddpm_ms.pipeline import DiffusionPipeline
    from ddpm_ms.sampling import compiled, noise_generator

    cfg, model, schedule, diffusion, info = _build(args)
    pipe = DiffusionPipeline.from_config(cfg, model)
    scheduler = pipe.scheduler(args.sampler)
    shape = (args.batch_size, cfg.model.channels, *cfg.model.image_size)
    jit = pipe.jit = args.mode == "graph"
    steps = args.sample_steps or scheduler.num_inference_steps  # the scheduler's default: what a user runs
    timed_steps = min(steps, 50 if args.sample_steps else 20 if steps > 50 else steps)

    unguided = {"class_labels": "none", "guidance_scale": 1.0} if pipe.num_classes else {}  # one model call a step

    def run_once():
        pipe(args.batch_size, scheduler=scheduler, num_inference_steps=timed_steps, batch_size=args.batch_size,
             progress=False, **unguided)

    tic = time.perf_counter()
    pipe(args.batch_size, scheduler=scheduler, num_inference_steps=2, batch_size=args.batch_size, progress=False,
         **unguided)
    first = time.perf_counter() - tic
    if args.profile:
        return {**info, **profile(run_once, args.profile)}
    times = _timed_loop(run_once, args.seconds, min_steps=2)
    per_step = float(np.sum(times)) / (len(times) * timed_steps)

    forward = compiled(model) if jit else model
    x = ms.Tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    t = ms.Tensor(np.full((shape[0],), 500.0, np.float32))
    model_times = _timed_loop(lambda: forward(x, t).asnumpy(), min(args.seconds, 10.0), min_steps=3)
    out, ones, normal = forward(x, t), ms.ops.ones((shape[0],), ms.float32), noise_generator(0)

    def loop_without_model():
        y = x
        for k in scheduler.timesteps:
            _ = ones * float(k)
            y = scheduler.step(out, int(k), y, noise=normal(shape) if scheduler.needs_noise(k) else None).prev_sample
        y.asnumpy()

    scheduler.set_timesteps(timed_steps)
    loop_times = _timed_loop(loop_without_model, 2.0, min_steps=3)
    loop_ms = 1000 * float(np.median(loop_times)) / timed_steps
    result = _summary(info, times, first, args.batch_size, args.batch_size)
    del result["step_ms_median"]
    result.update(sampler=args.sampler, steps=steps, timed_steps=timed_steps,
                  img_per_s=round(args.batch_size / (per_step * steps), 4),
                  model_calls_per_s=round(1 / per_step, 2),
                  denoised_img_per_s=round(args.batch_size / per_step, 2),
                  compile_s=round(max(first - 2 * per_step, 0.0), 1),
                  step_ms=round(1000 * per_step, 1), model_ms_median=round(1000 * float(np.median(model_times)), 1),
                  loop_ms_per_step=round(loop_ms, 2), loop_overhead_pct=round(100 * loop_ms / (1000 * per_step), 2))
    return result


def _summary(info, times, first, images_per_call, batch_size) -> dict:
    import numpy as np
    total = float(np.sum(times))
    return {**info, "img_per_s": round(images_per_call * len(times) / total, 2),
            "step_ms_median": round(1000 * float(np.median(times)), 1),
            "calls": len(times), "seconds": round(total, 1),
            "compile_s": round(max(first - float(np.median(times)), 0.0), 1),
            "peak_rss_mb": peak_rss_mb(), **_peak_over_build(info)}


def _peak_over_build(info) -> dict:
    """Peak RSS minus RSS after import and model build: the memory the step itself costs (the twin
    in benchmarks/ reports the same figure)."""
    base = info.get("rss_after_build_mb")
    return {"peak_over_build_mb": round(peak_rss_mb() - base, 1)} if base is not None else {}


def profile(run_once, out_dir, calls=3) -> dict:
    """Run `calls` calls under MindSpore's profiler and return the time per op type."""
    import csv
    import glob
    import mindspore as ms

    prof = ms.Profiler(output_path=out_dir)
    for _ in range(calls):
        run_once()
    prof.stop()
    prof.analyse()
    files = sorted(glob.glob(os.path.join(out_dir, "**", "cpu_op_type_info_*.csv"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        return {"profile": f"no cpu_op_type_info_*.csv under {out_dir} (the profiler wrote no CPU op table)"}
    with open(files[-1]) as f:
        rows = [(r["op_type"], float(r["total_compute_time"])) for r in csv.DictReader(f)]
    total = sum(ms_ for _, ms_ in rows) or 1.0
    rows.sort(key=lambda r: -r[1])
    return {"profile_ms_per_call": round(total / calls, 1),
            "profile": {op: round(100 * t / total, 1) for op, t in rows if t / total >= 0.005}}


# -- the driver: one subprocess per measurement ------------------------------------------------
def _worker_cmd(args, task, mode, batch_size, sampler=None, variant="default"):
    cmd = [sys.executable, "-m", "ddpm_ms.cli.bench", task, "--worker", "--mode", mode, "--variant", variant,
           "--batch-size", str(batch_size), "--seconds", str(args.seconds), "--preset", args.preset,
           "--device", args.device, "--warmup", str(args.warmup), "--amp-dtype", args.amp_dtype]
    if args.sample_steps:
        cmd += ["--sample-steps", str(args.sample_steps)]
    if args.dim:
        cmd += ["--dim", str(args.dim)]
    if sampler:
        cmd += ["--sampler", sampler]
    if args.profile:
        name = f"{task}_{sampler.replace('+', 'p')}" if sampler else task
        cmd += ["--profile", os.path.join(args.profile, f"{name}_{mode}_b{batch_size}")]
    return cmd


def run_worker(args, task, mode, batch_size, sampler=None, variant="default") -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(_worker_cmd(args, task, mode, batch_size, sampler, variant), capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"worker exited with {proc.returncode}", "stderr_tail": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _by_mode(args, task, batch_size, sampler=None, variant="default") -> dict:
    result = {}
    for mode in args.modes:
        if not args.json:
            what = f"{task} {sampler}" if sampler else f"{task} {variant}"
            print(f"[bench] {what} batch {batch_size} {mode} ...", file=sys.stderr, flush=True)
        result[mode] = run_worker(args, task, mode, batch_size, sampler, variant)
    if "graph" in result and "pynative" in result and "img_per_s" in result["pynative"] \
            and "img_per_s" in result["graph"]:
        result["graph_over_pynative"] = round(result["graph"]["img_per_s"] / result["pynative"]["img_per_s"], 2)
    return result


def bench(args, task, batch_size) -> dict:
    """train: {mode: figures} (one variant) or {variant: {mode: figures}} plus each variant's
    img/s relative to the first; sample: {sampler: {mode: figures}}."""
    if task == "train" and len(args.variants) == 1:
        result = _by_mode(args, task, batch_size, variant=args.variants[0])
    elif task == "train":
        result = {v: _by_mode(args, task, batch_size, variant=v) for v in args.variants}
        first = result[args.variants[0]]
        result["relative_img_per_s"] = {
            v: {m: round(result[v][m]["img_per_s"] / first[m]["img_per_s"], 3) for m in args.modes
                if "img_per_s" in result[v].get(m, {}) and "img_per_s" in first.get(m, {})}
            for v in args.variants}
    else:
        result = {s: _by_mode(args, task, batch_size, s) for s in args.samplers}
    from ddpm_ms.device import machine

    result.update(task=task, batch_size=batch_size, machine=machine())
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=["train", "sample", "all"],
                   help="train: the compiled train step; sample: each sampler's loop; "
                        "all: train at batch 32 and 128, sample at batch 64")
    p.add_argument("--batch-size", type=int, help="default: 32 for train, 64 for sample")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first (default 2)")
    p.add_argument("--variants", nargs="+", choices=list(TRAIN_VARIANTS), default=["default"],
                   help="train steps to time: plain (no clipping, no EMA), clip, ema1 (clipping + the EMA after "
                        "every update), default (clipping + the EMA every ema_update_every updates, as the "
                        "preset trains), accum4 (default with 4 micro-batches per update); several: each "
                        "one's img/s relative to the first")
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS.names(), default=["ddpm", "ddim", "dpm++"],
                   help="samplers to time (default: ddpm ddim dpm++; dpm++sde costs what dpm++ does)")
    p.add_argument("--sample-steps", type=int,
                   help="steps per chain for every sampler (default: DDPM 1000, DDIM 50, DPM-Solver++ 20)")
    p.add_argument("--model", choices=BACKBONES.names(),
                   help="the backbone whose reference preset is measured (ddpm_ms.presets.reference_preset; "
                        "default unet)")
    p.add_argument("--preset", help="measure this preset instead (default: the --model's)")
    p.add_argument("--dim", type=int, help="override the (U-Net) preset's model width")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: the model's matrix products in bfloat16 as `--amp O1 --amp-dtype bfloat16` "
                        "trains (on CPU: in the C++ kernels, where the CPU has AVX512-BF16 or AMX)")
    p.add_argument("--profile", metavar="DIR",
                   help="instead of timing, profile 3 calls with MindSpore's profiler into DIR and "
                        "report the share of time per op type")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--sampler", choices=SAMPLERS.names(), default="ddpm", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=list(TRAIN_VARIANTS), default="default", help=argparse.SUPPRESS)
    return p


def _check_model_args(args) -> str | None:
    """Settle which preset is measured; an error message when the flags contradict each other."""
    from ddpm_ms.presets import preset, reference_preset

    if args.preset is None:
        args.preset = reference_preset(args.model or "unet")
    try:
        model = preset(args.preset).model
        if args.model and args.model != model.arch:
            return f"--preset {args.preset} is a {model.arch} preset, not a {args.model} one; give --model or --preset"
        set_model_fields(model, args)
    except ValueError as e:
        return str(e)
    return None


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not args.worker:
        error = _check_model_args(args)
        if error:
            print(f"bench.py: error: {error}", file=sys.stderr)
            return 2
    if args.seconds < 0 or (args.batch_size is not None and args.batch_size < 1) or \
            (args.sample_steps is not None and args.sample_steps < 1):
        print("bench.py: error: --seconds must be >= 0, --batch-size and --sample-steps >= 1", file=sys.stderr)
        return 2
    if args.worker:
        import ddpm_ms  # noqa: F401 -- sets quiet logging before MindSpore starts
        measure = measure_train if args.task == "train" else measure_sample
        print(json.dumps(measure(args)))
        return 0
    if args.task == "all":
        result = {"train_b32": bench(args, "train", 32), "train_b128": bench(args, "train", 128),
                  "sample_b64": bench(args, "sample", 64)}
    else:
        result = bench(args, args.task, args.batch_size or DEFAULT_BATCH[args.task])
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
