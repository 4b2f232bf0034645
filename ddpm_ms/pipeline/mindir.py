"""The denoiser as a MindIR graph, for MindSpore Lite and Ascend inference, and sampling from that graph.

`export_mindir(pipe, path)` writes `pipe`'s denoiser, built with the native formulation (the
MindSpore ops GPU and Ascend run; none of the CPU-only `ops.Custom` kernels), in inference mode
(no dropout, no random op), as one graph with a dynamic batch:

    unconditional:      eps = f(x: float32 (B, C, H, W), t: int32 (B,))
    class-conditional:  eps = f(x, t, y: int32 (B,), w: float32 (1,))
                           = f_uncond + w (f_cond - f_uncond)   (classifier-free guidance inside)

where y = num_classes means "no class" and w = 1 is the conditional model alone (what a sampler
passes outside the guidance interval). The output is the model's prediction (noise, x0 or v, as
`model_config.json` says). `MindIRDenoiser` loads the file as an `nn.GraphCell` and answers like the
model Cell, so `DiffusionPipeline.from_pretrained(dir, mindir=True)` samples with any scheduler.

MindSpore compiles an export into the process's context, and a second export after the context
changed was seen to fail: scripts/export.py therefore exports in a fresh process (`export_in_subprocess`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ddpm_ms.device import select_device

MINDIR = "denoiser.mindir"
MINDIR_INFO = "denoiser_mindir.json"


class UnconditionalDenoiser(nn.Cell):
    """The exported graph of an unconditional model: eps = f(x, t)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def construct(self, x, t):
        return self.model(x, t)


class GuidedDenoiser(nn.Cell):
    """The exported graph of a class-conditional model, classifier-free guidance inside:
    f_uncond + w (f_cond - f_uncond), both halves in one batch."""

    def __init__(self, model, num_classes: int):
        super().__init__()
        self.model, self.no_class = model, int(num_classes)

    def construct(self, x, t, y, w):
        b = x.shape[0]
        out = self.model(ops.cat((x, x)), ops.cat((t, t)), ops.cat((y, ops.fill(ms.int32, (b,), self.no_class))))
        cond, uncond = out[:b], out[b:]
        return uncond + w * (cond - uncond)


def guided_denoiser(model, num_classes: int):
    """The Cell that is exported: `model` with classifier-free guidance folded in (conditional), or
    the model itself with int32 timesteps (unconditional)."""
    net = GuidedDenoiser(model, num_classes) if num_classes else UnconditionalDenoiser(model)
    net.set_train(False)
    return net


def graph_inputs(model_config):
    """Placeholder inputs of the exported graph, with the batch dimension dynamic."""
    c, (h, w) = model_config.channels, model_config.image_size
    inputs = [ms.Tensor(shape=[None, c, h, w], dtype=ms.float32), ms.Tensor(shape=[None], dtype=ms.int32)]
    if model_config.num_classes:
        inputs += [ms.Tensor(shape=[None], dtype=ms.int32), ms.Tensor(shape=[1], dtype=ms.float32)]
    return inputs


def export_mindir(pipe, out_dir) -> Path:
    """Write `pipe`'s denoiser as out_dir/denoiser.mindir (atomically) and its input description as
    denoiser_mindir.json. The model must use the native formulation: build it with
    DDPM_MS_KERNELS=native (export_in_subprocess does)."""
    kinds = {c.formulation for _, c in pipe.model.cells_and_names() if hasattr(c, "formulation")}
    if kinds - {"native"}:
        raise ValueError(f"the model runs the {sorted(kinds - {'native'})} formulation; a MindIR file must hold MindSpore's "
                         "own ops: build it with DDPM_MS_KERNELS=native (scripts/export.py --format mindir does)")
    out_dir = Path(out_dir)
    m = pipe.model_config
    net = guided_denoiser(pipe.model, m.num_classes)
    tmp = out_dir / ".denoiser-part"  # ms.export adds ".mindir"
    ms.export(net, *graph_inputs(m), file_name=str(tmp), file_format="MINDIR")
    os.replace(tmp.with_name(tmp.name + ".mindir"), out_dir / MINDIR)
    (out_dir / MINDIR).chmod(0o644)  # MindSpore writes it owner-read-only; a handed-on file is the user's to manage
    names = ["x", "t"] + (["y", "w"] if m.num_classes else [])
    info = {"inputs": names, "image_shape": [m.channels, *m.image_size], "num_classes": int(m.num_classes),
            "prediction": pipe.diffusion.objective, "timesteps": int(pipe.diffusion.timesteps),
            "classifier_free_guidance": "uncond + w * (cond - uncond); y = num_classes is no class; w = 1: none"
            if m.num_classes else None}
    (out_dir / MINDIR_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir / MINDIR


def export_in_subprocess(source, out_dir, weights: str = "auto") -> Path:
    """Export the pipeline, run or checkpoint `source` into the pipeline directory `out_dir` (which must
    exist) in a fresh Python process with the native formulation; a failure raises with its last lines."""
    env = {**os.environ, "DDPM_MS_KERNELS": "native"}
    cmd = [sys.executable, "-m", "ddpm_ms.pipeline.mindir", str(source), str(out_dir), weights]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"the MindIR export of {source} failed:\n{tail}")
    return Path(out_dir) / MINDIR


class MindIRDenoiser:
    """A denoiser read from denoiser.mindir: `model(x, t[, y][, w])` like the model Cell (t may be
    float; it is rounded to int32), with classifier-free guidance done inside the graph
    (`guidance_in_graph`)."""

    guidance_in_graph = True

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: write it with scripts/export.py --format mindir")
        info_path = path.with_name(MINDIR_INFO)
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        self.num_classes = int(info.get("num_classes", 0))
        self.graph = nn.GraphCell(ms.load(str(path)))
        self.training = False
        self._one = ms.Tensor(np.ones(1, np.float32))

    def set_train(self, mode: bool = True):
        return self  # an inference graph

    def __call__(self, x, t, y=None, w=None):
        t = t.round().astype(ms.int32) if t.dtype != ms.int32 else t
        if not self.num_classes:
            return self.graph(x, t)
        if y is None:
            y = ms.Tensor(np.full(x.shape[0], self.num_classes, np.int32))
        w = self._one if w is None else (w if isinstance(w, ms.Tensor) else ms.Tensor([float(w)], ms.float32))
        return self.graph(x, t, y, w.reshape(1).astype(ms.float32))


def _main(argv) -> int:
    """python -m ddpm_ms.pipeline.mindir SOURCE OUT_DIR WEIGHTS: the fresh process of export_in_subprocess."""
    from ddpm_ms.pipeline import DiffusionPipeline  # here: ddpm_ms.pipeline imports this module

    source, out_dir, weights = argv
    select_device("auto")
    pipe = DiffusionPipeline.from_pretrained(source, weights=weights)
    export_mindir(pipe, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
