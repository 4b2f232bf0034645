"""Training: the compiled update, EMA, optimizers and schedules, mixed precision and the loop that
ties them together. Run checkpoints are in ddpm_ms.checkpoint; inference in ddpm_ms.pipeline."""
from ddpm_ms.training.ema import EMA
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
from ddpm_ms.training.step import TrainStep, make_train_step
from ddpm_ms.training.trainer import NonFiniteLoss, Trainer, prepare_run_dir

__all__ = ["EMA", "NonFiniteLoss", "TrainStep", "Trainer", "WarmupSchedule", "build_optimizer", "make_train_step",
           "prepare_run_dir"]
