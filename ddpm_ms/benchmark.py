"""The benchmark harness (scripts/bench.py): speed and memory of training and sampling.

    job = Measurement(task="train", batch_size=32, preset="mnist")
    bench(job)                       # {mode: figures, ...}, each measurement in its own process
    measure(job)                     # one measurement in this process (what that process runs)

Each measurement (graph or pynative mode, one batch size) runs in its own Python process
(`python -m ddpm_ms.benchmark JOB_JSON`), so compile time and peak resident memory belong to that
measurement alone. Training times the update the Trainer runs, through its HostLoop (timesteps,
noise and label drops drawn on the host, forward, loss, gradients, clipping, the Adam update and
the EMA; TRAIN_VARIANTS compare it with and without clipping, EMA and gradient accumulation);
sampling times the `sample()` loop of each scheduler (one compiled model call and one scheduler
update per step). The data pipeline is left out: x0 is a fixed random batch.

For sampling, `img_per_s` counts finished images per second at the sampler's usual step count
(DDPM 1000, DDIM 50, DPM-Solver++ 20), `model_calls_per_s` the loop's steps per second, and
`denoised_img_per_s` (batch x model calls/s) the figure that compares with a framework's
inference throughput. `loop_ms_per_step` times the loop without the model (scheduler update,
noise, timestep tensor); `loop_overhead_pct` is its share of a step.

MindSpore and the library are imported inside the measurement that runs them: a worker process
loads what its own measurement needs and no more, so its memory figures (rss_after_build_mb,
peak_rss_mb) stay those of that measurement (a sampling worker does not hold the training
modules), and the driver, which only starts workers, loads none of it.
"""
from __future__ import annotations

import csv
import glob
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ddpm_ms.config import MODES  # graph, pynative (ddpm_ms.config imports nothing heavy)

DEFAULT_BATCH = {"train": 32, "sample": 64}
DEFAULT_SAMPLERS = ("ddpm", "ddim", "dpm++")  # dpm++sde costs what dpm++ does

TRAIN_VARIANTS = {
    # name: (clip the gradient norm, average the EMA every n updates (0: no EMA; None: as the
    # preset does, cfg.train.ema_update_every), micro-batches per update)
    "plain": (False, 0, 1),        # forward, loss, backward, Adam (the step before EMA existed)
    "clip": (True, 0, 1),          # + global-norm clipping
    "ema1": (True, 1, 1),          # + the EMA average after every update
    "default": (True, None, 1),    # + the EMA at the preset's cadence: what the preset trains with
    "accum4": (True, None, 4),     # + 4 micro-batches per update (img/s counts every micro-batch)
}


@dataclass
class Measurement:
    """One measurement: what a worker process runs (and, for the driver, the settings every
    measurement of a benchmark shares; bench() varies mode, variant and sampler)."""
    task: str = "train"                 # train: the optimizer update; sample: one sampler's loop
    mode: str = "graph"                 # graph or pynative
    batch_size: int = 32
    preset: str = "mnist"               # a ddpm_ms.presets name (scripts/bench.py: the backbone's reference preset)
    model_fields: dict = field(default_factory=dict)  # preset model fields to override, e.g. {"dim": 8}
    seconds: float = 20.0               # timed seconds
    warmup: int = 2                     # untimed calls after the first (train)
    device: str = "auto"
    amp_dtype: str = "float32"          # bfloat16: as `train.py --amp O1 --amp-dtype bfloat16` runs
    sample_steps: int | None = None     # steps per chain (None: the sampler's usual count)
    sampler: str = "ddpm"               # sample
    variant: str = "default"            # train: one of TRAIN_VARIANTS
    profile: str | None = None          # a directory: profile 3 calls there instead of timing


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
def _build(job: Measurement):
    import mindspore as ms
    from ddpm_ms.presets import preset
    from ddpm_ms.device import select_device
    from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
    from ddpm_ms.models import build_model, count_parameters

    device = select_device(job.device)
    if job.mode == "pynative":
        ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = preset(job.preset)
    for name, value in job.model_fields.items():
        setattr(cfg.model, name, value)
    ms.set_seed(0)
    model = build_model(cfg.model)
    precision = {}
    if job.amp_dtype == "bfloat16":  # as `train.py --amp O1 --amp-dtype bfloat16` runs it
        from ddpm_ms.training.amp import apply_amp, resolve_amp
        level, dtype, note = resolve_amp("O1", "bfloat16", device)
        apply_amp(model, level, dtype, device)
        precision = {"amp": level, **({"amp_note": note} if note else {})}
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    d = cfg.diffusion
    diffusion = GaussianDiffusion(model, schedule, d.objective, d.loss_type, d.p2_gamma, d.p2_k, d.min_snr_gamma)
    m = cfg.model
    shape = {flag[2:].replace("-", "_"): getattr(m, field) for flag, (field, _) in type(m).flags.items()}
    info = {"device": device, "preset": job.preset, "arch": m.arch, **shape, "params": count_parameters(model),
            "amp_dtype": job.amp_dtype, **precision, "rss_after_build_mb": rss_mb()}
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


def measure_train(job: Measurement) -> dict:
    """One optimizer update as the Trainer runs it, through the same HostLoop: host-drawn
    timesteps, noise and label drops, the compiled TrainStep (micro-batches, then the update)
    and the EMA's compiled average."""
    import mindspore as ms
    from ddpm_ms.models import build_model
    from ddpm_ms.training import EMA, HostLoop, TrainStep, WarmupSchedule, build_optimizer

    cfg, model, schedule, diffusion, info = _build(job)
    clip, ema_every, accum = TRAIN_VARIANTS[job.variant]
    t_cfg = cfg.train
    if ema_every is None:
        ema_every = t_cfg.ema_update_every if t_cfg.ema_decay else 0
    optimizer = build_optimizer(model.trainable_params(), WarmupSchedule(t_cfg.lr), "adam")
    jit = job.mode == "graph"
    step = TrainStep(diffusion, optimizer, grad_accum=accum, clip_grad=t_cfg.clip_grad if clip else None, jit=jit)
    ema = EMA(model, build_model(cfg.model), t_cfg.ema_decay or 0.999, update_every=ema_every, jit=jit) if ema_every else None
    rng = np.random.default_rng(0)
    shape = (job.batch_size, cfg.model.channels, *cfg.model.image_size)
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
    _timed_loop(run_once, 0, min_steps=job.warmup)
    if job.profile:
        return {**info, **profile(run_once, job.profile)}
    times = _timed_loop(run_once, job.seconds)
    return {**_summary(info, times, first, job.batch_size * accum, job.batch_size), "variant": job.variant,
            "grad_accum": accum, "clip": clip, "ema_every": ema_every}


def measure_sample(job: Measurement) -> dict:
    """One sampler's loop: the chain at the sampler's usual step count (DDPM's 1000 steps are timed
    on a respaced 20-step chain, whose steps cost the same), then the model call alone and the
    loop without the model (scheduler updates, noise, timestep tensors) for the loop's overhead."""
    import mindspore as ms
    from ddpm_ms.pipeline import DiffusionPipeline
    from ddpm_ms.sampling import compiled, noise_generator

    cfg, model, schedule, diffusion, info = _build(job)
    pipe = DiffusionPipeline.from_config(cfg, model)
    scheduler = pipe.scheduler(job.sampler)
    shape = (job.batch_size, cfg.model.channels, *cfg.model.image_size)
    jit = pipe.jit = job.mode == "graph"
    steps = job.sample_steps or scheduler.num_inference_steps  # the scheduler's default: what a user runs
    timed_steps = min(steps, 50 if job.sample_steps else 20 if steps > 50 else steps)

    unguided = {"class_labels": "none", "guidance_scale": 1.0} if pipe.num_classes else {}  # one model call a step

    def run_once():
        pipe(job.batch_size, scheduler=scheduler, num_inference_steps=timed_steps, batch_size=job.batch_size,
             progress=False, **unguided)

    tic = time.perf_counter()
    pipe(job.batch_size, scheduler=scheduler, num_inference_steps=2, batch_size=job.batch_size, progress=False,
         **unguided)
    first = time.perf_counter() - tic
    if job.profile:
        return {**info, **profile(run_once, job.profile)}
    times = _timed_loop(run_once, job.seconds, min_steps=2)
    per_step = float(np.sum(times)) / (len(times) * timed_steps)

    forward = compiled(model) if jit else model
    x = ms.Tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    t = ms.Tensor(np.full((shape[0],), 500.0, np.float32))
    model_times = _timed_loop(lambda: forward(x, t).asnumpy(), min(job.seconds, 10.0), min_steps=3)
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
    result = _summary(info, times, first, job.batch_size, job.batch_size)
    del result["step_ms_median"]
    result.update(sampler=job.sampler, steps=steps, timed_steps=timed_steps,
                  img_per_s=round(job.batch_size / (per_step * steps), 4),
                  model_calls_per_s=round(1 / per_step, 2),
                  denoised_img_per_s=round(job.batch_size / per_step, 2),
                  compile_s=round(max(first - 2 * per_step, 0.0), 1),
                  step_ms=round(1000 * per_step, 1), model_ms_median=round(1000 * float(np.median(model_times)), 1),
                  loop_ms_per_step=round(loop_ms, 2), loop_overhead_pct=round(100 * loop_ms / (1000 * per_step), 2))
    return result


def measure(job: Measurement) -> dict:
    """The figures of one measurement, run in this process."""
    return measure_train(job) if job.task == "train" else measure_sample(job)


def _summary(info, times, first, images_per_call, batch_size) -> dict:
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
def worker_command(job: Measurement) -> list[str]:
    """The command line of the process that runs `job` and prints its figures as one JSON line."""
    return [sys.executable, "-m", "ddpm_ms.benchmark", json.dumps(asdict(job))]


def run_worker(job: Measurement) -> dict:
    """`job`'s figures, measured in a fresh process; {"error", "stderr_tail"} when it fails."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(worker_command(job), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"worker exited with {proc.returncode}", "stderr_tail": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _by_mode(job: Measurement, modes, progress: bool) -> dict:
    result = {}
    for mode in modes:
        if progress:
            what = f"{job.task} {job.sampler}" if job.task == "sample" else f"{job.task} {job.variant}"
            print(f"[bench] {what} batch {job.batch_size} {mode} ...", file=sys.stderr, flush=True)
        where = None
        if job.profile:
            name = f"{job.task}_{job.sampler.replace('+', 'p')}" if job.task == "sample" else job.task
            where = os.path.join(job.profile, f"{name}_{mode}_b{job.batch_size}")
        result[mode] = run_worker(replace(job, mode=mode, profile=where))
    if "graph" in result and "pynative" in result and "img_per_s" in result["pynative"] \
            and "img_per_s" in result["graph"]:
        result["graph_over_pynative"] = round(result["graph"]["img_per_s"] / result["pynative"]["img_per_s"], 2)
    return result


def bench(job: Measurement, modes=MODES, variants=("default",), samplers=DEFAULT_SAMPLERS, progress=True) -> dict:
    """job.task at job.batch_size in each of `modes`, each measurement in its own process (job.profile:
    the directory that gets one profile folder per measurement). train: {mode: figures} (one variant)
    or {variant: {mode: figures}} plus each variant's img/s relative to the first; sample: {sampler:
    {mode: figures}}. progress: one line on stderr per measurement."""
    if job.task == "train" and len(variants) == 1:
        result = _by_mode(replace(job, variant=variants[0]), modes, progress)
    elif job.task == "train":
        result = {v: _by_mode(replace(job, variant=v), modes, progress) for v in variants}
        first = result[variants[0]]
        result["relative_img_per_s"] = {
            v: {m: round(result[v][m]["img_per_s"] / first[m]["img_per_s"], 3) for m in modes
                if "img_per_s" in result[v].get(m, {}) and "img_per_s" in first.get(m, {})}
            for v in variants}
    else:
        result = {s: _by_mode(replace(job, sampler=s), modes, progress) for s in samplers}
    from ddpm_ms.device import machine  # imports MindSpore, which the driver needs only for this line

    result.update(task=job.task, batch_size=job.batch_size, machine=machine())
    return result


def bench_all(job: Measurement, **options) -> dict:
    """The standard set: train at batch 32 and 128, sample at batch 64 (bench's `options` for each)."""
    return {"train_b32": bench(replace(job, task="train", batch_size=32), **options),
            "train_b128": bench(replace(job, task="train", batch_size=128), **options),
            "sample_b64": bench(replace(job, task="sample", batch_size=64), **options)}


if __name__ == "__main__":  # python -m ddpm_ms.benchmark JOB_JSON: one worker (ddpm_ms set quiet logging first)
    print(json.dumps(measure(Measurement(**json.loads(sys.argv[1])))))
