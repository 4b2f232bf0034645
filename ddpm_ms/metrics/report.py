"""What evaluate.py measures and keeps: one evaluation of a model, or of images made elsewhere (an
.npz), as a record (FID and its floor, Inception Score, precision, recall, class scores, how the
images were drawn, where and when), the per-class table, and a run's evaluations (eval.jsonl) as
a Markdown table.

    record, images, labels = evaluate_model(pipe, "mnist", num=10_000)
    record = evaluate_npz(Path("samples.npz"), "mnist", per_class=True)
    print(eval_log_table(run_dir))

`log` receives the lines for the person watching (evaluate.py prints them on stderr): what is
scored against what, a note on labels that cannot be used, the per-class table.
"""
from __future__ import annotations

import json
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ddpm_ms.data import class_names
from ddpm_ms.device import current_device, machine
from ddpm_ms.metrics.classifier import NUM_CLASSES
from ddpm_ms.metrics.evaluation import (FeatureExtractor, Reference, class_fid_floor, fid_floor, sample_and_score,
                                        score_images)


def _silent(line: str) -> None:
    pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_npz(path: Path):
    """(images, labels) of an .npz: arr_0 (or its only array), and `labels` or None."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        f = np.load(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e}); write one with sample.py --npz") from e
    if isinstance(f, np.ndarray):
        raise ValueError(f"{path} is a .npy array, not an .npz; save it with np.savez(path, images)")
    with f:
        others = [k for k in f.files if k != "labels"]
        key = "arr_0" if "arr_0" in others else (others[0] if len(others) == 1 else None)
        if key is None:
            raise ValueError(f"{path} holds {', '.join(f.files) or 'nothing'}; put the images under arr_0")
        images, labels = f[key], f["labels"] if "labels" in f.files else None
    if labels is not None:
        if labels.shape != (len(images),):
            raise ValueError(f"{path} holds {len(images)} images but labels of shape {labels.shape}; "
                             "save one class per image (np.savez(path, images, labels=labels))")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path} holds {labels.dtype} labels; save the classes as integers")
    return images, labels


REPORT_COLUMNS = (("step", "training step"), ("weights", "weights"), ("sampler", "sampler"), ("steps", "steps"),
                  ("spacing", "grid"), ("first_timestep", "first t"),
                  ("num", "images"), ("fid", "FID"), ("fid_floor", "floor"), ("inception_score", "IS"), ("precision", "precision"),
                  ("recall", "recall"), ("class_accuracy", "class acc."), ("seconds", "sampling s"), ("guidance_scale", "guidance"),
                  ("guidance_rescale", "rescale"), ("guidance_interval", "guided t"))


# Columns of class-conditional runs only, shown when some record has them.
CONDITIONAL_KEYS = ("guidance_scale", "guidance_rescale", "guidance_interval", "class_accuracy")


def eval_log_table(run_dir: Path) -> str:
    """A run's evaluations as a Markdown table, grouped by image count (FIDs compare only within one)."""
    path = run_dir / "eval.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: evaluate the run first (evaluate.py --run {run_dir})")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    records.sort(key=lambda r: (r.get("num", 0), r.get("step") or 0, r.get("sampler", ""), r.get("steps", 0)))
    columns = [(key, title) for key, title in REPORT_COLUMNS
               if key not in CONDITIONAL_KEYS or any(key in r for r in records)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + " --- |" * len(columns)]
    for r in records:
        cells = ["" if r.get(key) is None else f"{r[key]:.3f}" if key in ("inception_score", "precision", "recall", "class_accuracy")
                 else "{}-{}".format(*r[key]) if key == "guidance_interval"
                 else f"{r[key]} {r['solver_order']}M" if key == "sampler" and "solver_order" in r
                 else str(r[key]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(record: dict, counts, class_names) -> str:
    """The per-class scores of a record with class_fid_floor as a Markdown table: each class's FID
    against its own floor, then all classes against the overall floor."""
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    def ratio(fid, floor):
        return "-" if fid is None or not floor else f"{fid / floor:.1f}"

    lines = ["| class | images | FID | floor | FID / floor | class acc. |", "|" + " --- |" * 6]
    for c, (fid, floor) in enumerate(zip(record["class_fid"], record["class_fid_floor"])):
        name = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"| {name} | {int(counts[c]):,} | {cell(fid, '.2f')} | {cell(floor, '.2f')} | {ratio(fid, floor)} "
                     f"| {cell(record['class_accuracy_by_class'][c], '.1%')} |")
    lines.append(f"| all classes | {record['num']:,} | {record['fid']:.2f} | {record['fid_floor']:.2f} "
                 f"| {ratio(record['fid'], record['fid_floor'])} | {record['class_accuracy']:.1%} |")
    return "\n".join(lines)


def class_counts(labels):
    """Images per class of the classifier, for class_fid_floor and the table."""
    return np.bincount(np.asarray(labels, np.int64), minlength=NUM_CLASSES)


def per_class_table(record: dict, labels, data: str) -> str:
    """class_table of a record with class_fid_floor for images drawn for `labels`, under a title line."""
    return (f"FID by class, each against its floor (as many real train images of the class; {data}):\n"
            + class_table(record, class_counts(labels), class_names(data)))


def evaluate_npz(path: Path, data: str, root=None, per_class: bool = False, jit: bool = True,
                 log: Callable[[str], None] = _silent) -> dict:
    """Score the images of the .npz `path` (read_npz) against the test set of `data` (from `root`):
    the record. Labels outside the classifier's classes are left out (the overall scores only,
    with a note to `log`); per_class adds the floor and each class's floor (class_fid_floor) and
    logs the per-class table, and needs the labels."""
    started = _now()
    images, labels = read_npz(path)
    if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        # As for a model with more classes than the classifier: the overall scores only.
        log(f"{path}: labels {labels.min()}..{labels.max()} are not the classifier's classes "
            f"0..{NUM_CLASSES - 1}; scoring without per-class scores")
        labels = None
    if per_class and labels is None:
        raise ValueError(f"--per-class needs the class of every image: {path} holds no labels of the classifier's "
                         "classes (evaluate.py --save-npz keeps a class-conditional model's)")
    extractor = FeatureExtractor(data, jit=jit)
    reference = Reference.load(data, extractor, root)
    floors = class_fid_floor(extractor, reference, class_counts(labels), root) if per_class else None
    tic = time.perf_counter()
    record = {"npz": str(path), **score_images(images, extractor, reference, labels)}
    record.update(score_seconds=round(time.perf_counter() - tic, 1), date=started)
    if per_class:
        record.update(fid_floor=fid_floor(extractor, reference, record["num"], root), class_fid_floor=floors)
        log(per_class_table(record, labels, data))
    return record


def evaluate_model(pipe, data: str, root=None, *, sampler: str | None = None, steps: int | None = None,
                   num: int = 10_000, seed: int = 0, batch_size: int = 250, floor: bool = True,
                   per_class: bool = False, jit: bool = True, progress: bool = True,
                   log: Callable[[str], None] = _silent, **sampling) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Draw `num` images from the pipeline `pipe` and score them against the test set of `data` (from
    `root`) with sample_and_score (`sampling`: its settings, None taking the pipeline's): (record,
    images, labels). The record adds the floor (floor: the FID of as many real train images), where
    the model comes from, the device, the machine and the date; per_class adds each class's floor
    (computed before sampling, so that too few real images of a class stop it early) and logs the
    per-class table."""
    started = _now()
    extractor = FeatureExtractor(data, jit=jit)
    reference = Reference.load(data, extractor, root)
    floors = class_fid_floor(extractor, reference, class_counts(pipe.labels_for(num)), root) if per_class else None
    step = f"step {pipe.checkpoint_step}, {pipe.loaded_weights} weights" if pipe.checkpoint else "pipeline"
    device = current_device()
    log(f"model: {pipe.checkpoint or pipe.source} ({step})  device: {device}  reference: {reference.name}")
    record, images, labels = sample_and_score(pipe, extractor, reference, sampler, steps, num, seed, batch_size,
                                              progress=progress, **sampling)
    source = {"checkpoint": str(pipe.checkpoint), "step": pipe.checkpoint_step, "weights": pipe.loaded_weights} \
        if pipe.checkpoint else {"model": str(pipe.source)}
    if floor:
        record["fid_floor"] = fid_floor(extractor, reference, num, root)
    if per_class:
        record["class_fid_floor"] = floors
        log(per_class_table(record, labels, data))
    record = {**source, **record, "device": device, "machine": machine(), "date": started}
    return record, images, labels
