"""scripts/train.py killed with SIGKILL at random moments (one of them while a checkpoint is
being written) and stopped with Ctrl-C, resumed each time: the run always loads, never loses
more than the steps since its last checkpoint, and finishes with every step logged once."""
import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpm_ms.config import Config, DataConfig, DiffusionConfig, TrainConfig
from ddpm_ms.models import UNetConfig
from ddpm_ms.checkpoint import resumable_checkpoint
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.checkpoint import state_of

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STEPS, SAVE_EVERY = 40, 2


def config():
    # PyNative: kill safety is about files, and skipping the compile keeps each process short.
    return Config(preset="tiny", model=UNetConfig(image_size=(28, 28), channels=1, dim=8, dim_mults=(1, 2)),
                  diffusion=DiffusionConfig(timesteps=100),
                  data=DataConfig(dataset="fashion_mnist", num_workers=1),
                  train=TrainConfig(batch_size=8, lr=2e-3, steps=STEPS, log_every=1, save_every=SAVE_EVERY,
                                    keep_last=2, sample_every=1000, num_samples=1, sample_steps=2, device="CPU",
                                    mode="pynative", seed=0))


def start(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "--no-progress", "--mode",
                             "pynative", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def logged_steps(run):
    path = run / "log.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("elapsed_s")]


def wait_for(condition, proc, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stdout.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.005)


def check_state(run):
    """The run loads and has lost no more than the steps since its last checkpoint."""
    path, saved = resumable_checkpoint(run)
    step = state_of(saved)["step"]
    last_logged = max(logged_steps(run) or [0])
    assert 0 <= last_logged - step <= SAVE_EVERY, (path, step, last_logged)
    pipe = DiffusionPipeline.from_pretrained(run)  # what sample.py would load
    assert pipe.loaded_weights == "ema"
    return step


def test_kill_at_random_moments_then_resume(tmp_path):
    rng = random.Random(0)
    run = tmp_path / "run"
    cfg_file = tmp_path / "tiny.json"
    config().save(cfg_file)
    ckpts = run / "checkpoints"

    # 1. SIGKILL at a random moment after the first checkpoint.
    proc = start("--config", str(cfg_file), "--out", str(run))
    wait_for(lambda: any(ckpts.glob("step_*.ckpt")), proc)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = [check_state(run)]

    # 2. SIGKILL while a checkpoint is being written: the moment its temporary file exists.
    proc = start("--resume", str(run))
    seen = []
    base = check_state(run)

    def writing():
        tmp = [e.name for e in os.scandir(ckpts) if e.name.startswith(".tmp-")]
        if tmp and max(logged_steps(run) or [0]) > base:
            seen.extend(tmp)
            return True
        return False

    wait_for(writing, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen, "the kill landed during a checkpoint write"
    killed_at.append(check_state(run))

    # 3. Ctrl-C: a checkpoint of the current step, a clean exit, the command to resume.
    proc = start("--resume", str(run))
    wait_for(lambda: max(logged_steps(run) or [0]) >= killed_at[-1] + 3, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    # MindSpore's runtime turns Ctrl-C into SIGTERM while its kernels run; both mean stop.
    assert re.search(r"stopped at step \d+ \((SIGINT|SIGTERM)\); saved", out) and f"--resume {run}" in out, out
    step = check_state(run)
    assert step == max(logged_steps(run)), "Ctrl-C saves the step it stopped at"
    assert not [e for e in os.scandir(ckpts) if e.name.startswith(".tmp-")]

    # 4. Resume to the end: every step logged exactly once, in order.
    proc = start("--resume", str(run))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert logged_steps(run) == list(range(1, STEPS + 1))
    assert state_of(resumable_checkpoint(run)[1])["step"] == STEPS
    assert (ckpts / "final.ckpt").is_file() and not [e for e in os.scandir(ckpts) if e.name.startswith(".tmp-")]
    assert len(list(ckpts.glob("step_*.ckpt"))) == 2, "keep_last = 2"
    assert Config.load(run).to_dict() == config().to_dict()
