"""The files of a training run directory, other than checkpoints (ddpm_ms.checkpoint) and pictures:

    config.json    the run's settings; a resumed run rewrites it with the new length or logging
    log.csv        one row every log_every steps (LOG_FIELDS), appended as the run goes
    eval.jsonl     FID evaluations, made while training ("during_training") or by evaluate.py
    summary.json   what the run did, written when it stops or ends
    checkpoints/, samples/

A new run refuses a directory that already holds something. A resumed run drops what a kill cut
short (temporary files, a half-written row or line) and the rows and evaluations after the step it
resumes from, which it makes again.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ddpm_ms.files import append_jsonl, atomic_write

MSRUN_LOGS = "msrun"  # the worker logs of a data-parallel run (training/parallel.py), written before the run starts

LOG_FIELDS = ["step", "epoch", "loss", "lr", "grad_norm", "img_per_s", "ema_decay", "elapsed_s", "fid"]


def prepare_run_dir(out) -> Path:
    """Create `out`; refuse one that already holds a run, so nothing is overwritten."""
    out = Path(out)
    if out.exists() and any(p.name != MSRUN_LOGS for p in out.iterdir()):  # msrun's logs come first
        raise FileExistsError(f"{out} already exists and is not empty; choose a new --out, or continue "
                              f"that run with --resume {out} (runs are never overwritten)")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    return out


class RunDir:
    """One run directory: `RunDir.create(out, cfg)` for a new run, `RunDir.existing(out)` to resume."""

    def __init__(self, path):
        self.path = Path(path)
        self.config, self.log, self.evaluations = (self.path / n for n in ("config.json", "log.csv", "eval.jsonl"))
        self.summary = self.path / "summary.json"

    @classmethod
    def create(cls, out, cfg) -> "RunDir":
        run = cls(prepare_run_dir(out))
        cfg.save(run.config)
        return run

    @classmethod
    def existing(cls, out) -> "RunDir":
        run = cls(out)
        if not run.config.is_file():
            raise FileNotFoundError(f"cannot resume {run.path}: it holds no config.json (not a run directory)")
        return run

    def resume_at(self, step: int, cfg) -> None:
        """Continue the run from `step`: the new settings, and nothing a kill or a later step left."""
        cfg.save(self.config)  # the new length or logging settings
        for tmp in self.path.rglob(".tmp-*"):
            tmp.unlink(missing_ok=True)  # a write cut short by a kill
        truncate_log(self.log, step)
        truncate_evaluations(self.evaluations, step)

    def command(self) -> str | None:
        """The command that started the run, as summary.json keeps it (None if it has none yet)."""
        try:
            return json.loads(self.summary.read_text()).get("command")
        except (OSError, ValueError):
            return None

    def grid(self, name: str) -> Path:
        return self.path / "samples" / f"{name}.png"

    def append_evaluation(self, record: dict) -> None:
        append_jsonl(self.evaluations, record)

    def write_summary(self, summary: dict) -> dict:
        atomic_write(self.summary, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
        return summary

    def open_log(self) -> "TrainingLog":
        return TrainingLog(self.log)


class TrainingLog:
    """log.csv, open for appending (a context manager). `add` collects each update; `write`
    writes one row of what happened since the previous row and starts the next."""

    def __init__(self, path: Path):
        new = not path.is_file() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
        self.window = _Window()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def add(self, update, images: int, seconds: float) -> None:
        self.window.add(update.loss, update.grad_norm, update.lr, update.ema_decay, images, seconds, update.skipped)

    def write(self, step: int, epoch: int, elapsed: float, fid: float | None = None) -> dict:
        """Write the row (flushed) and return the progress bar's figures for it."""
        window, self.window = self.window, _Window()
        self.writer.writerow({**window.row(step, epoch, elapsed), "fid": "" if fid is None else fid})
        self.file.flush()
        postfix = {"loss": f"{window.mean('loss'):.4f}", "img_s": f"{window.speed:.1f}"}
        return postfix if fid is None else {**postfix, "fid": f"{fid:.2f}"}


def truncate_log(path: Path, step: int) -> None:
    """Keep the log's rows up to `step` (a resumed run rewrites the later ones); drops a row
    cut short by a kill."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if _complete(r) and int(float(r["step"])) <= step]
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def truncate_evaluations(path: Path, step: int) -> None:
    """Drop the evaluations made while training after `step` (the resumed run makes them again)
    and any line a kill cut short; evaluate.py's records stay."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not (record.get("during_training") and int(record.get("step") or 0) > step):
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


def _complete(row: dict) -> bool:
    try:
        float(row.get("step") or "x"), float(row.get("elapsed_s") or "x")
    except ValueError:
        return False
    return True


class _Window:
    """What happened between two rows of log.csv."""

    def __init__(self):
        self.values = {"loss": [], "grad_norm": [], "lr": [], "ema_decay": []}
        self.images, self.seconds, self.skipped = 0, 0.0, 0

    def add(self, loss, grad_norm, lr, ema_decay, images, seconds, skipped=False):
        for key, value in (("loss", loss), ("grad_norm", grad_norm), ("lr", lr), ("ema_decay", ema_decay)):
            if value is not None:
                self.values[key].append(value)
        self.images += images
        self.seconds += seconds
        self.skipped += int(skipped)

    def mean(self, key):
        return float(np.mean(self.values[key])) if self.values[key] else float("nan")

    @property
    def speed(self):
        return self.images / self.seconds if self.seconds else 0.0

    def row(self, step, epoch, elapsed):
        last = {k: (v[-1] if v else None) for k, v in self.values.items()}
        return {"step": step, "epoch": epoch, "loss": f"{self.mean('loss'):.6f}",
                "lr": f"{last['lr']:.6g}" if last["lr"] is not None else "",
                "grad_norm": f"{self.mean('grad_norm'):.4f}", "img_per_s": f"{self.speed:.2f}",
                "ema_decay": f"{last['ema_decay']:.6f}" if last["ema_decay"] is not None else "",
                "elapsed_s": f"{elapsed:.1f}"}
