"""Training: the compiled update, EMA, optimizers and schedules, mixed precision, checkpoints
and the loop that ties them together."""
from ddpm_ms.training.checkpoint import (CheckpointMismatch, CheckpointUnreadable, latest_checkpoint, load_into,
                                         load_model, resumable_checkpoint, save_checkpoint)
from ddpm_ms.training.ema import EMA
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
from ddpm_ms.training.step import TrainStep, make_train_step
from ddpm_ms.training.trainer import NonFiniteLoss, Trainer, prepare_run_dir

__all__ = ["CheckpointMismatch", "CheckpointUnreadable", "EMA", "NonFiniteLoss", "TrainStep", "Trainer",
           "WarmupSchedule", "build_optimizer", "latest_checkpoint", "load_into", "load_model", "make_train_step",
           "prepare_run_dir", "resumable_checkpoint", "save_checkpoint"]
