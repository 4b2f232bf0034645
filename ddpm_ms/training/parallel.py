"""Data-parallel training over processes started by `msrun` (MindSpore's dynamic cluster), and the
launcher behind `train.py --workers N`.

    msrun --worker_num=N --local_worker_num=N --join=True python scripts/train.py --distributed ...
    python scripts/train.py --workers N ...          (the same, launched for you)

Every rank builds the same model from the same seed, reads its own shard of each epoch's shuffle
(`num_shards`/`shard_id`: MindSpore deals one global permutation round-robin, so the k-th batches of
all ranks together are the k-th batch of a one-rank run), takes batch_size / N images of each
global batch, and draws each image's timestep, noise and label drop from (seed, the image's
position in the run's stream of images): the updates do not depend on N. Gradients (and the logged
loss) are averaged across ranks inside the compiled step, before clipping, so every rank applies
the same update and keeps the same weights and EMA. Rank 0 alone writes the run directory (logs,
grids, checkpoints, atomically as ever); the other ranks write nothing there. On GPU and Ascend the
same command runs with another --device (NCCL and HCCL replace the CPU's TCP collectives).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.communication import get_group_size, get_rank, init

from ddpm_ms.training.run_dir import MSRUN_LOGS  # the folder of a run directory that msrun writes its logs into


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group: rank (0 is the one that writes) and world (the group's size)."""
    rank: int
    world: int

    @classmethod
    def join(cls) -> "DataParallel":
        """Join the msrun group (MindSpore's communication init); a clear error outside msrun."""
        if "MS_ROLE" not in os.environ and "RANK_ID" not in os.environ:
            raise ValueError("--distributed runs inside msrun, which starts one process per worker: launch with "
                             "`python scripts/train.py --workers N ...` (or msrun --worker_num=N --local_worker_num=N "
                             "--join=True python scripts/train.py --distributed ...)")

        init()
        return cls(int(get_rank()), int(get_group_size()))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch; an error when N does not divide it."""
        if batch_size % self.world:
            raise ValueError(f"--batch-size {batch_size} does not divide among {self.world} workers: use a multiple "
                             f"of {self.world} (each worker takes batch_size / workers images of every batch)")
        return batch_size // self.world

    def grad_reducer(self, params):
        """The compiled step's gradient average across ranks."""

        return nn.DistributedGradReducer(params, mean=True, degree=self.world)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workers: int, train_args: list[str], out: Path) -> int:
    """Run `train.py train_args --distributed` on `workers` local processes with msrun, its worker logs
    in out/msrun/; returns msrun's exit code, having printed the end of every failed worker's log."""
    logs = Path(out) / MSRUN_LOGS
    logs.mkdir(parents=True, exist_ok=True)
    # msrun starts `python ...` from PATH: this interpreter's, with this ddpm_ms importable.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    cmd = ["msrun", f"--worker_num={workers}", f"--local_worker_num={workers}", f"--master_port={free_port()}",
           f"--log_dir={logs}", "--join=True", "python", "-m", "ddpm_ms", "train", *train_args, "--distributed"]
    print(f"launching {workers} workers with msrun; their logs: {logs}/worker_<rank>.log", flush=True)
    try:
        code = subprocess.call(cmd, env=env)
    except FileNotFoundError:
        raise FileNotFoundError("msrun (MindSpore's launcher) is not on PATH: it comes with the mindspore package; "
                                "activate the environment MindSpore is installed in") from None
    if code != 0:
        for log in sorted(logs.glob("worker_*.log")):
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if line.strip() and not line.startswith("[INFO]") and not line.startswith("[WARNING]")]
            if any(word in "\n".join(lines[-40:]) for word in ("Error", "error:", "Traceback")):
                tail = "\n    ".join(lines[-6:])
                print(f"{log.stem.replace('_', ' ')} failed; the end of {log}:\n    {tail}", file=sys.stderr)
    return code


class AnyRank:
    """`agree(flag) -> bool`: True when `flag` is True on any rank (one compiled all-reduce of a scalar)."""

    def __init__(self):

        self._sum = ops.AllReduce()  # sum: the one reduction every back end has (CPU has no max)
        self._call = ms.jit(self._reduce)

    def _reduce(self, x):
        return self._sum(x)

    def __call__(self, flag: bool) -> bool:

        return bool(self._call(ms.Tensor(np.array([1.0 if flag else 0.0], np.float32))).asnumpy()[0] > 0)
