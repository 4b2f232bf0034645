"""Training: the compiled update (step.py), the host loop around it (host_loop.py), EMA, optimizers
and schedules, mixed precision, the run directory's files (run_dir.py), the periodic events
(events.py) and the Trainer that ties them together. Run checkpoints are in ddpm_ms.checkpoint;
inference in ddpm_ms.pipeline."""
from ddpm_ms.training.ema import EMA
from ddpm_ms.training.host_loop import HostLoop, NonFiniteLoss
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
from ddpm_ms.training.run_dir import RunDir, prepare_run_dir
from ddpm_ms.training.step import TrainStep, make_train_step
from ddpm_ms.training.trainer import Trainer

__all__ = ["EMA", "HostLoop", "NonFiniteLoss", "RunDir", "TrainStep", "Trainer", "WarmupSchedule", "build_optimizer",
           "make_train_step", "prepare_run_dir"]
