"""python scripts/export.py --run RUN --to DIR: hand a trained model to someone else.

Writes a pipeline directory (ddpm_ms/pipeline/directory.py): the run's EMA weights (or --weights raw)
in safetensors, model_config.json, scheduler_config.json and a model card (README.md) that names
the data set, the training steps, the newest evaluation of that checkpoint in the run's
eval.jsonl (FID, its floor and sample count; evaluate.py makes one) and the training command.
`sample.py --model DIR` and `DiffusionPipeline.from_pretrained(DIR)` need nothing else.

--format mindir also writes DIR/denoiser.mindir: the denoiser as one MindIR graph for MindSpore Lite
or Ascend inference (MindSpore's own ops, dynamic batch, classifier-free guidance inside for a
class-conditional model; see ddpm_ms/pipeline/mindir.py), exported in a fresh process.
`DiffusionPipeline.from_pretrained(DIR, mindir=True)` (or sample.py --model DIR --mindir) samples from it.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ddpm_ms.cli.command import command
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.pipeline.card import render_card
from ddpm_ms.pipeline.mindir import export_in_subprocess

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export.py", description="Write a trained run as a pipeline directory.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory: its config.json and latest checkpoint")
    src.add_argument("--ckpt", type=Path, help="one checkpoint inside a run directory")
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="the pipeline directory to write (new)")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                   help="auto (default): the EMA weights when the checkpoint has them, else the raw ones")
    p.add_argument("--command", metavar="TEXT",
                   help="the training command for the model card (default: the one the run recorded, if any)")
    p.add_argument("--format", default="pipeline", choices=["pipeline", "mindir"],
                   help="pipeline (default): weights + configs + card; mindir: the same plus denoiser.mindir")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it is a pipeline directory")
    return p


def evaluation_of(run_dir: Path, step, weights: str) -> dict | None:
    """The evaluate.py record of this checkpoint (its step and weights) with the most images, the
    newest among equals; None when the run has none."""
    path = run_dir / "eval.jsonl"
    if not path.is_file():
        return None
    best = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("during_training") or record.get("step") != step or record.get("weights") != weights:
            continue
        if best is None or record.get("num", 0) >= best.get("num", 0):
            best = record
    return best


def run(args) -> int:
    source = args.run or args.ckpt
    if not source.exists():
        raise FileNotFoundError(f"{'--run' if args.run else '--ckpt'} {source} does not exist")
    pipe = DiffusionPipeline.from_pretrained(source, weights=args.weights)
    run_dir = args.run or pipe.checkpoint.parent.parent
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    info = pipe.card_info()
    info.update(evaluation=evaluation_of(run_dir, pipe.checkpoint_step, pipe.loaded_weights),
                command=args.command or summary.get("command"), machine=summary.get("machine"))
    out = pipe.save_pretrained(args.to, card=render_card(info), overwrite=args.overwrite)
    if args.format == "mindir":
        try:
            mindir = export_in_subprocess(out, out)
        except RuntimeError:
            shutil.rmtree(out, ignore_errors=True)  # no half-made export is left behind
            raise
        print(f"mindir: {mindir} ({mindir.stat().st_size / 1e6:.1f} MB; inputs and guidance: "
              f"{mindir.with_name('denoiser_mindir.json').name})")
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    fid = info["evaluation"]
    print(f"pipeline: {out} ({size:.1f} MB; {pipe.loaded_weights} weights of {pipe.checkpoint}, step "
          f"{pipe.checkpoint_step}; FID {'%g at %d images' % (fid['fid'], fid['num']) if fid else 'not measured'})")
    print(f"sample from it: python scripts/sample.py --model {out}")
    return 0


main = command("export.py", parser, run, errors=(RuntimeError,))  # RuntimeError: the MindIR export's process failed
