"""Training engine: the loop (the only reader of trick fields), checkpoints, distributed set-up."""
from bagoftricks.engine.loop import (NonFiniteLoss, TrainingInterrupted, UsageError, build_data, build_model,
                                     evaluate, lr_at, train)

__all__ = ["NonFiniteLoss", "TrainingInterrupted", "UsageError", "build_data", "build_model", "evaluate", "lr_at",
           "train"]
