"""The op audit (scripts/check_ops.py): which MindSpore primitives the GPU and Ascend path runs, and whether
MindSpore's documentation says those back ends have them.

For each registered backbone's reference preset (ddpm_ms.presets.reference_preset), built with
the native formulation (DDPM_MS_KERNELS=native, the one GPU and Ascend use), a fresh process compiles
in graph mode, with jit_syntax_level STRICT:

    train    the optimizer update (forward, loss, gradients, clipping, the optimizer) and the EMA update
    sampler  the model call of a sampling step, with classifier-free guidance for a conditional model
    mindir   the graph scripts/export.py --format mindir writes

and reads the primitives off MindSpore's IR dump (the "validate" stage, after autodiff, before any
back-end pass) or off the MindIR file. Each primitive is looked up in MindSpore's docstrings (the
text of its API page): its "Supported Platforms" must name Ascend and GPU. A backward primitive
(FooGrad, FooBackward, Conv2DBackprop*) has no page of its own: it is checked by its forward op's.
Graph plumbing (Load, UpdateState, MakeTuple, TupleGetItem, Depend, Return) is not a kernel. The
data-parallel all-reduce (training/parallel.py) is checked by name. A primitive that is not
documented for Ascend and GPU fails the audit (exit 1); so does one whose page cannot be found.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore.train import mind_ir_pb2

from ddpm_ms.device import select_device
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import build_model
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.pipeline.mindir import export_mindir
from ddpm_ms.presets import preset, reference_preset
from ddpm_ms.sampling.model_call import denoise
from ddpm_ms.training.ema import EMA
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer, decoupled_decay
from ddpm_ms.training.step import make_train_step

PLUMBING = {"Load", "UpdateState", "MakeTuple", "TupleGetItem", "Depend", "Return", "MakeList", "ListGetItem",
            "make_tuple", "tuple_getitem", "depend", "Switch", "Partial", "J"}
TARGETS = ("Ascend", "GPU")
EXTRA = {"AllReduce": "data parallel (DistributedGradReducer, the agreed stop)"}
# Primitives without a page of their own that MindSpore's front end emits for a documented public
# function: `x * 2.0` is Muls (ops.mul), `x / 2.0` Divs, `x < 1.0` LessScalar, ops.split with sizes
# SplitWithSize, ops.silu SiLU, ops.isfinite IsFinite.
LOWERED_FROM = {"Muls": ("mul",), "Divs": ("div",), "LessScalar": ("less",), "SplitWithSize": ("split",),
                "SiLU": ("silu",), "SiLUGrad": ("silu",), "IsFinite": ("isfinite",), "AddExt": ("add",),
                "SubExt": ("sub",), "GeLU": ("gelu",), "GeLUGrad": ("gelu",), "SumExt": ("sum",),
                "FillScalar": ("fill",), "DropoutExt": ("dropout",), "DropoutGenMaskExt": ("dropout",),
                "DropoutDoMaskExt": ("dropout",)}
_NODE = re.compile(r"^\s+%[^=]+= ([A-Za-z_][A-Za-z0-9_]*)\(")


def ir_primitives(files) -> dict[str, int]:
    """Primitive name -> count in MindSpore IR dumps (.ir text files); function-graph calls are skipped."""
    counts: dict[str, int] = {}
    for path in files:
        for line in Path(path).read_text(errors="replace").splitlines():
            m = _NODE.match(line)
            if m:
                name = m.group(1).removeprefix("PrimFunc_")
                counts[name] = counts.get(name, 0) + 1
    return counts


def mindir_primitives(path) -> dict[str, int]:
    """Primitive name -> count in a MindIR file (nodes typed "REF::Name:id")."""
    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(Path(path).read_bytes())
    counts: dict[str, int] = {}
    for node in list(model.graph.node) + [n for f in model.functions for n in f.node]:
        if node.op_type.startswith("REF::"):
            name = node.op_type.split("::")[-1].split(":")[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _platforms_in(doc: str | None):
    m = re.search(r"Supported Platforms:\s*\n\s*(.+)", doc or "")
    return re.findall(r"``(\w+)``", m.group(1)) if m else None


def documented_platforms(name: str):
    """(platforms, where) from the docstring of primitive `name` (or its functional form, or for a
    backward primitive its forward op's); (None, why) when no page names them."""
    modules = [importlib.import_module(m) for m in (
        "mindspore.ops", "mindspore.ops.operations", "mindspore.ops.auto_generate", "mindspore.mint",
        "mindspore.ops.operations.nn_ops", "mindspore.ops.operations.comm_ops", "mindspore.ops.operations._grad_ops",
        "mindspore.ops.operations._inner_ops", "mindspore.ops.auto_generate.gen_ops_def")]
    # the primitive's own page first (its class, then its functional form), then the page of the
    # public function our code calls that MindSpore lowers to it
    candidates = [name, _snake(name)] + [c for c in LOWERED_FROM.get(name, ())]
    for candidate in candidates:
        for module in modules:
            obj = getattr(module, candidate, None)
            platforms = _platforms_in(getattr(obj, "__doc__", None)) if obj is not None else None
            if platforms:
                how = "" if candidate in (name, _snake(name)) else f"{name} is what it lowers to: "
                return platforms, f"{how}{module.__name__}.{candidate}"
    forward = re.sub(r"(Grad|Backward|BackpropInput|BackpropFilter|GradV2)$", "", name)
    if forward != name:
        platforms, where = documented_platforms(forward)
        return platforms, f"backward of {forward}: {where}"
    return None, "no documentation page names its platforms"


def audit(primitives: dict) -> list[dict]:
    """One row per primitive: graphs it appears in, documented platforms, verdict."""
    rows = []
    for name in sorted(primitives):
        if name in PLUMBING:
            continue
        platforms, where = documented_platforms(name)
        ok = platforms is not None and all(t in platforms for t in TARGETS)
        rows.append({"primitive": name, "graphs": primitives[name], "platforms": platforms, "source": where,
                     "ok": ok})
    return rows


# -- the worker: one backbone, compiled in a fresh process ----------------------------------------
def _new_validate_files(dump: Path, seen: set) -> list[Path]:
    files = sorted(p for p in dump.rglob("*validate*.ir") if p not in seen)
    seen.update(files)
    return files


def worker(arch: str, out_json: Path) -> int:
    """Compile `arch`'s reference preset's graphs (train step + EMA, guided sampler call, MindIR) and
    write {graph: {primitive: count}} to out_json. Runs in its own process: see `collect`."""
    select_device("CPU")
    ms.set_context(jit_syntax_level=ms.STRICT)
    dump, seen, found = Path(os.environ["MS_DEV_SAVE_GRAPHS_PATH"]), set(), {}
    cfg = preset(reference_preset(arch))
    t, d, m = cfg.train, cfg.diffusion, cfg.model
    ms.set_seed(0)
    model, ema_model = build_model(m), build_model(m)
    diffusion = GaussianDiffusion(model, NoiseSchedule.from_config(d), d.objective, d.loss_type, d.p2_gamma, d.p2_k,
                                  d.min_snr_gamma)
    optimizer = build_optimizer(model.trainable_params(), WarmupSchedule(t.lr, t.lr_schedule, t.warmup_steps, 100),
                                t.optimizer, t.weight_decay)
    step = make_train_step(diffusion, optimizer, clip_grad=t.clip_grad,
                           weight_decay=decoupled_decay(t.optimizer, t.weight_decay))
    b = 2
    x = ms.Tensor(np.random.default_rng(0).standard_normal((b, m.channels, *m.image_size)).astype(np.float32))
    ts = ms.Tensor(np.array([1, d.timesteps - 1], np.int32))
    y = ms.Tensor(np.array([0, m.num_classes], np.int32)) if m.num_classes else None
    model.set_train(True)
    step.update(*((x, ts, x, y) if y is not None else (x, ts, x)))
    EMA(model, ema_model, 0.999, 1, False).update(1)
    found["train"] = ir_primitives(_new_validate_files(dump, seen))

    model.set_train(False)
    y2 = ms.Tensor(np.array([3, 4, m.num_classes, m.num_classes], np.int32))
    w = ms.Tensor(2.0, ms.float32)

    def guided(x, t):
        return denoise(model, x, t, y2, w)

    def unconditional(x, t):
        return denoise(model, x, t)

    ms.jit(guided if m.num_classes else unconditional)(x, ts.astype(ms.float32))
    found["sampler"] = ir_primitives(_new_validate_files(dump, seen))

    pipe = DiffusionPipeline.from_config(cfg, model)
    with tempfile.TemporaryDirectory() as tmp:
        found["mindir"] = mindir_primitives(export_mindir(pipe, tmp))
    out_json.write_text(json.dumps(found))
    return 0


def collect(arch: str) -> dict:
    """{graph: {primitive: count}} of one backbone, from a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DDPM_MS_KERNELS": "native", "MS_DEV_SAVE_GRAPHS": "1",
               "MS_DEV_SAVE_GRAPHS_PATH": str(Path(tmp) / "ir")}
        out = Path(tmp) / "found.json"
        proc = subprocess.run([sys.executable, "-m", "ddpm_ms.op_audit", arch, str(out)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise RuntimeError(f"compiling the {arch} graphs (native formulation, STRICT) failed:\n{tail}")
        return json.loads(out.read_text())


def table(rows, archs) -> str:
    lines = ["| primitive | " + " | ".join(archs) + " | documented platforms | checked by | Ascend + GPU |",
             "|---|" + "---|" * len(archs) + "---|---|---|"]
    for r in rows:
        cells = [", ".join(g for g in ("train", "sampler", "mindir") if g in r["graphs"].get(a, {})) or "-"
                 for a in archs]
        plat = " ".join(r["platforms"]) if r["platforms"] else "?"
        lines.append(f"| {r['primitive']} | " + " | ".join(cells) + f" | {plat} | {r['source']} | "
                     f"{'yes' if r['ok'] else '**NO**'} |")
    return "\n".join(lines)


def run(archs) -> tuple[list[dict], str]:
    """(rows, Markdown table) of the audit of the backbones `archs`, each compiled in a fresh process
    (a RuntimeError with the failing process's last lines when one cannot compile)."""
    found = {arch: collect(arch) for arch in archs}
    per_prim: dict[str, dict] = {}
    for arch, graphs in found.items():
        for graph, prims in graphs.items():
            for name in prims:
                per_prim.setdefault(name, {}).setdefault(arch, {})[graph] = prims[name]
    for name in EXTRA:
        per_prim.setdefault(name, {}).setdefault("data parallel", {})["train"] = 1
    rows = audit(per_prim)
    return rows, table(rows, list(archs) + ["data parallel"])


if __name__ == "__main__":  # python -m ddpm_ms.op_audit ARCH OUT: one backbone's worker process (collect)
    sys.exit(worker(sys.argv[1], Path(sys.argv[2])))
