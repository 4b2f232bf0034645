"""ddpm_ms against its PyTorch twin, interleaved on one machine in one run: for each backbone and
workload, MindSpore's `scripts/bench.py` in float32 and bfloat16, then the twin in eager, torch.compile,
bfloat16 autocast and both, one after the other, so that every ratio compares neighbours in time.

    TORCH_VENV=/tmp/torch-venv python benchmarks/side_by_side.py --out docs/experiments/runs/speed_round2

Workloads: training at batch 32 and 128 (one optimizer update: forward, loss, backward, Adam; no
clipping or EMA, as the twin does), sampling at batch 64 (images denoised by one model call per
second; ddpm_ms's figure includes DPM-Solver++'s update). Every measurement runs in its own process
and is kept as JSON in --out; the table (markdown) goes to --out/table.md and stdout. Memory is
peak RSS minus RSS after import and model build, at training batch 32.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWIN = ROOT / "benchmarks" / "pytorch_reference" / "bench_torch.py"
WORKLOADS = {"train32": ("train", 32), "train128": ("train", 128), "sample64": ("sample", 64)}
TORCH_VARIANTS = {"eager": [], "compile": ["--compile"], "bf16": ["--bf16"], "compile_bf16": ["--compile", "--bf16"]}


def run_json(cmd, env=None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ms_measure(model, workload, dtype, seconds) -> dict:
    task, batch = WORKLOADS[workload]
    cmd = [sys.executable, "scripts/bench.py", task, "--model", model, "--batch-size", str(batch), "--modes", "graph",
           "--seconds", str(seconds), "--amp-dtype", dtype, "--json"]
    cmd += ["--variants", "plain"] if task == "train" else ["--samplers", "dpm++"]
    out = run_json(cmd)
    figures = out.get("graph") or out.get("dpm++", {}).get("graph") or out
    if "error" in figures:
        return figures
    speed = figures["img_per_s"] if task == "train" else figures["denoised_img_per_s"]
    return {**figures, "speed": speed}


def torch_measure(python, model, workload, variant, seconds) -> dict:
    cmd = [python, str(TWIN), "--model", model, "--only", workload, "--seconds", str(seconds), *TORCH_VARIANTS[variant]]
    out = run_json(cmd)
    figures = out.get(f"{WORKLOADS[workload][0]}_b{WORKLOADS[workload][1]}", out)
    return {**figures, "speed": figures["img_per_s"]} if "img_per_s" in figures else figures


def table(results) -> str:
    lines = ["| backbone | workload | ddpm_ms fp32 | bf16 | torch eager | compile | bf16 autocast | compile + bf16 | "
             "fp32 / eager | fp32 / compile | bf16 / torch bf16 | bf16 / compile + bf16 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model, by_workload in results.items():
        for workload, r in by_workload.items():
            s = {k: v.get("speed") for k, v in r.items()}
            fmt = lambda v: f"{v:,.1f}" if v else "-"  # noqa: E731
            ratio = lambda a, b: f"{s[a] / s[b]:.2f}x" if s.get(a) and s.get(b) else "-"  # noqa: E731
            lines.append(f"| {model} | {workload} | {fmt(s.get('ms_float32'))} | {fmt(s.get('ms_bfloat16'))} | "
                         f"{fmt(s.get('torch_eager'))} | {fmt(s.get('torch_compile'))} | {fmt(s.get('torch_bf16'))} | "
                         f"{fmt(s.get('torch_compile_bf16'))} | {ratio('ms_float32', 'torch_eager')} | "
                         f"{ratio('ms_float32', 'torch_compile')} | {ratio('ms_bfloat16', 'torch_bf16')} | "
                         f"{ratio('ms_bfloat16', 'torch_compile_bf16')} |")
    lines += ["", "Memory, training at batch 32 (peak RSS minus RSS after import and model build, MB):", "",
              "| backbone | ddpm_ms fp32 | ddpm_ms bf16 | torch eager | torch bf16 |", "| --- | ---: | ---: | ---: | ---: |"]
    for model, by_workload in results.items():
        r = by_workload.get("train32", {})
        mem = [r.get(k, {}).get("peak_over_build_mb") for k in ("ms_float32", "ms_bfloat16", "torch_eager", "torch_bf16")]
        lines.append(f"| {model} | " + " | ".join(f"{m:,.0f}" if m is not None else "-" for m in mem) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON records and table.md")
    p.add_argument("--models", nargs="+", choices=["unet", "dit"], default=["unet", "dit"])
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per measurement")
    p.add_argument("--torch-python", default=os.path.join(os.environ.get("TORCH_VENV", "/tmp/torch-venv"), "bin", "python"),
                   help="the throw-away venv's python (default: $TORCH_VENV/bin/python)")
    args = p.parse_args(argv)
    if not Path(args.torch_python).exists():
        p.error(f"{args.torch_python} does not exist: create the PyTorch venv (benchmarks/pytorch_reference/README.md) "
                "or pass --torch-python")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.models:
        for workload in args.workloads:
            r = results.setdefault(model, {}).setdefault(workload, {})
            for dtype in ("float32", "bfloat16"):
                print(f"[side_by_side] {model} {workload} ddpm_ms {dtype}", file=sys.stderr, flush=True)
                r[f"ms_{dtype}"] = ms_measure(model, workload, dtype, args.seconds)
            for variant in TORCH_VARIANTS:
                print(f"[side_by_side] {model} {workload} torch {variant}", file=sys.stderr, flush=True)
                r[f"torch_{variant}"] = torch_measure(args.torch_python, model, workload, variant, args.seconds)
            (args.out / f"{model}_{workload}.json").write_text(json.dumps(r, indent=1) + "\n")
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
