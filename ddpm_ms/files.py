"""Writing files so that nobody ever sees half of one: the one helper every writer uses."""
from __future__ import annotations

import json
import os
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, durable: bool = True) -> Path:
    """`write(tmp_path)` into `.tmp-<pid>-<name>` beside `path` (its own name per process, so two
    writers never share one), then rename it onto `path`: a reader,
    or a process killed at any moment, sees the old complete file or the new one. `durable`
    also flushes the data and the directory entry to disk first (checkpoints, configs, logs;
    pictures skip it). A failure removes the temporary file and leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def append_jsonl(path, record: dict) -> Path:
    """Add `record` as one JSON line to `path`, rewriting the file atomically: a kill never
    leaves a half-written line (eval.jsonl, which holds minutes-long evaluations, stays whole).
    Where the OS has advisory locks, a lock file beside it keeps two writers (a training run's
    --eval-every and an evaluate.py) from dropping each other's records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        try:
            import fcntl  # POSIX only: imported where it is used, so Windows gets here and skips the lock
            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory locks; a lone writer is still safe
            pass
        old = path.read_text() if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(old + json.dumps(record) + "\n"))
