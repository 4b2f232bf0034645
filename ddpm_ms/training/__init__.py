"""Training: the compiled train step, the loop, checkpoints."""
from ddpm_ms.training.checkpoint import (CheckpointMismatch, latest_checkpoint, load_into, load_model,
                                         save_checkpoint)
from ddpm_ms.training.trainer import NonFiniteLoss, Trainer, make_train_step, prepare_run_dir

__all__ = ["CheckpointMismatch", "NonFiniteLoss", "Trainer", "latest_checkpoint", "load_into", "load_model",
           "make_train_step", "prepare_run_dir", "save_checkpoint"]
