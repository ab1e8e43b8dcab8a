"""The generic training engine shared by every method (see trainer.py)."""

from alignloop.engine.checkpoint import latest_checkpoint, list_checkpoints
from alignloop.engine.config import TrainConfig
from alignloop.engine.method import Experience, LossOutput, NonFiniteLossError, OnPolicyMethod, TrainingMethod
from alignloop.engine.metrics import read_metrics
from alignloop.engine.trainer import KILL_AT_STEP_ENV, ResumeError, Trainer, TrainResult, make_accelerator

__all__ = [
    "Experience",
    "KILL_AT_STEP_ENV",
    "LossOutput",
    "NonFiniteLossError",
    "OnPolicyMethod",
    "ResumeError",
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "TrainingMethod",
    "latest_checkpoint",
    "list_checkpoints",
    "make_accelerator",
    "read_metrics",
]
