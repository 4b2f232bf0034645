"""Score a trained model with DPM-Solver++ on a timestep grid of your own.

`scripts/evaluate.py` samples on the grids the schedulers make (leading / trailing / linspace, cut at
--lambda-min-clipped). This runs the same evaluation on any descending list of training timesteps,
to ask where the steps of a 20-step chain should go; it is how docs/experiments/samplers.md ("Where the ODE
starts") compared the starts t = 999, 995, 990, 985 and 975 and grids uniform in log-SNR or
quadratic in t:

    python benchmarks/timestep_grid.py --grid 990,949,899,849,799,749,699,649,599,549,499,449,399,349,299,249,199,149,99,49 \\
        -- --ckpt RUN/checkpoints/final.ckpt --num 2000

Everything after `--` goes to evaluate.py as it is (its --steps is set to the grid's length). The
record it prints says "spacing": "custom" and carries the grid; it is not appended to the run's
eval.jsonl.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_grid(text: str) -> np.ndarray:
    try:
        grid = np.array([int(v) for v in text.split(",")], dtype=np.int64)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of timesteps") from None
    if grid.size < 2 or np.any(np.diff(grid) >= 0) or grid[-1] < 0:
        raise argparse.ArgumentTypeError("the grid must hold at least 2 distinct timesteps >= 0, descending")
    return grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=parse_grid, required=True, help="timesteps, descending, comma-separated")
    ap.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="after --: evaluate.py's arguments")
    args = ap.parse_args(argv)
    rest = [a for a in args.evaluate_args if a != "--"]
    if "--sampler" in rest and rest[rest.index("--sampler") + 1] != "dpm++":
        ap.error("this sweeps DPM-Solver++'s grid: leave --sampler out or give dpm++")

    import ddpm_ms.sampling.base as base
    from evaluate_hook import evaluate_with_amended_record

    grid = args.grid

    def custom_grid(num_train_timesteps, num_inference_steps, spacing):
        if grid[0] >= num_train_timesteps:
            raise ValueError(f"--grid starts at {grid[0]}, beyond this model's {num_train_timesteps} timesteps")
        return grid.copy()

    base.spaced_timesteps = custom_grid  # Scheduler.set_timesteps looks it up here at every call

    def relabel(record):
        record.update(spacing="custom", grid=grid.tolist())
        record.pop("lambda_min_clipped", None)

    return evaluate_with_amended_record([*rest, "--sampler", "dpm++", "--steps", str(grid.size),
                                         "--lambda-min-clipped", "none"], relabel)


if __name__ == "__main__":
    sys.exit(main())
