"""Data-parallel training with msrun on two CPU workers (MindSpore's dynamic cluster over TCP):
the weights after k updates equal those of one worker training on the combined batches, a resumed
two-worker run continues exactly, only rank 0 writes the run directory, and a failing worker fails
the run with the end of its log."""
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

TRAIN = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
TINY = ["--preset", "fashion_mnist", "--dim", "8", "--batch-size", "8", "--lr-schedule", "constant",
        "--ema-decay", "0.5", "--sample-steps", "2", "--num-samples", "2", "--no-progress"]


def train(*args, check=True, tiny=True):
    cmd = [sys.executable, str(TRAIN), *(TINY if tiny else ["--no-progress"]), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def weights(run: Path) -> dict:
    """Model, EMA and optimizer tensors of a run's final checkpoint."""
    saved = ms.load_checkpoint(str(run / "checkpoints" / "final.ckpt"))
    return {k: v.asnumpy() for k, v in saved.items() if hasattr(v, "asnumpy") and k not in ("elapsed_s",)
            and v.asnumpy().dtype.kind == "f"}


@pytest.mark.slow
def test_two_workers_equal_one_on_the_combined_batches_and_resume_exactly(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    train("--workers", "2", "--steps", "2", "--save-every", "2", "--out", str(two))
    train("--workers", "2", "--steps", "3", "--save-every", "3", "--resume", str(two), tiny=False)
    train("--workers", "1", "--steps", "3", "--save-every", "3", "--out", str(one))
    a, b = weights(two), weights(one)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a) and any("moment1" in k for k in a)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-6, worst  # float summation order in the all-reduce, nothing more
    # and the updates did move the weights: the comparison is not of two untouched models
    assert max(float(np.abs(a[k]).max()) for k in a if "moment1" in k) > 1e-4
    # rank 0 alone wrote the run: one log with one row per logged step, the rank-1 worker's log names its rank
    rows = (two / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "3"], rows
    assert "worker 1 of 2" in (two / "msrun" / "worker_1.log").read_text()
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["final.ckpt", "step_0000002.ckpt",
                                                                       "step_0000003.ckpt"]


def test_a_failing_worker_fails_the_run_with_the_end_of_its_log(tmp_path):
    proc = train("--workers", "2", "--steps", "2", "--batch-size", "7", "--out", str(tmp_path / "odd"), check=False)
    assert proc.returncode != 0
    assert "worker 0 failed" in proc.stderr and "does not divide among 2 workers" in proc.stderr, proc.stderr[-2000:]


def test_distributed_outside_msrun_says_how_to_launch(tmp_path):
    proc = train("--distributed", "--steps", "1", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "--workers N" in proc.stderr, proc.stderr[-1000:]
    assert not (tmp_path / "x").exists()
