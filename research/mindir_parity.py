"""How far a sampler on the exported MindIR graph lands from the same sampler on the model Cell.

    python scripts/export.py --run RUN --to DIR --format mindir
    python research/mindir_parity.py DIR [--num 16] [--samplers dpm++:20 ddim:10]

Loads DIR twice, as the Cell (MindSpore's native ops, the formulation the graph holds) and as the
graph (`from_pretrained(DIR, mindir=True)`), draws the same images from the same noise with each
scheduler at its default guidance, and prints one JSON line per scheduler: the largest absolute
pixel difference (images in [-1, 1]) and the seconds each took.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["DDPM_MS_KERNELS"] = "native"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ddpm_ms.pipeline import DiffusionPipeline  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pipeline", type=Path)
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--samplers", nargs="+", default=["dpm++:20", "ddim:10"], metavar="NAME:STEPS",
                   help="samplers and their steps (default dpm++:20 ddim:10; on CPU both sides run MindSpore's "
                        "own, slower kernels)")
    args = p.parse_args()
    cell = DiffusionPipeline.from_pretrained(args.pipeline)
    graph = DiffusionPipeline.from_pretrained(args.pipeline, mindir=True)
    for sampler, steps in (item.split(":") for item in args.samplers):
        steps = int(steps)
        times, images = [], []
        for pipe in (cell, graph):
            tic = time.perf_counter()
            images.append(pipe(args.num, sampler=sampler, num_inference_steps=steps, seed=0, progress=False).images)
            times.append(round(time.perf_counter() - tic, 1))
        print(json.dumps({"sampler": sampler, "steps": steps, "num": args.num,
                          "max_abs_diff": float(np.abs(images[0] - images[1]).max()),
                          "cell_s": times[0], "mindir_s": times[1]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
