"""Every error bagoftricks raises on purpose, in two families that decide the exit status.

    BadInput (exit 2): the user's input is at fault; the message names the field, file or value.
        RecipeError      a recipe key or value
        DataError        a dataset file or folder
        CheckpointError  a checkpoint file or run folder that cannot be read or used
        WeightsError     a weights file (model.pretrained, export, predict) that does not fit the model
        UsageError       a command-line option or a combination of them
        SpecError        an ablation spec
    RunFailure (exit 1): the input was fine, the run failed.
        NonFiniteLoss         the loss or the weights stopped being finite
        CheckpointWriteError  a checkpoint could not be written (disk full, I/O error)
        LauncherError         an ablation launcher failed after it started
    TrainingInterrupted (exit 128 + N): SIGINT/SIGTERM after a checkpoint was written.

The command line maps the two families to their exit codes without listing the classes, so a new
error only has to choose its family. Nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path


class BadInput(ValueError):
    """The user's input is at fault (exit 2). The message names the field, file or value."""


class RunFailure(RuntimeError):
    """The input was fine but the run failed (exit 1)."""


class RecipeError(BadInput):
    """A recipe value or key is invalid; the message names the field."""


class DataError(BadInput):
    """Bad user data or paths.

    The message always names the file or folder at fault and, for size problems, the expected and the
    actual number of bytes, so the user can tell a truncated download from a wrong file.
    """


class CheckpointError(BadInput):
    """A checkpoint could not be read or used; the message names the file."""


class WeightsError(BadInput):
    """Weights that cannot go where they were asked to: a key or shape that does not fit the model, a
    file of no known layout, a model with no counterpart in another library. The message names the
    file, the key and both shapes."""


class UsageError(BadInput):
    """A command-line option, a run folder or a device that cannot be used as asked."""


class SpecError(BadInput):
    """An ablation spec (or the sweep folder it is run into) is invalid."""


class NonFiniteLoss(RunFailure):
    """The loss was not finite for train.max_bad_steps consecutive steps, or the weights became non-finite."""


class CheckpointWriteError(RunFailure):
    """A checkpoint could not be written (disk full, I/O error). The previous checkpoint is untouched
    and still 'latest'."""


class LauncherError(RunFailure):
    """An ablation launcher failed after it was asked for: no local Ray instance, a cluster without
    CPUs. (What the user typed wrong — Ray not installed, an unreachable --address — is a UsageError.)"""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written at a step boundary; exit 128 + signal.

    Under torchrun every rank raises it at the same global step, with the signal any rank received;
    `checkpoint` is the file rank 0 wrote (None on the other ranks).
    """

    def __init__(self, signum: int, checkpoint: Path | None, global_step: int | None = None, command: str = "train"):
        at = f" at global step {global_step}" if global_step is not None else ""
        super().__init__(f"stopped by signal {int(signum)}{at}; checkpoint {checkpoint}")
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.global_step = global_step
        self.command = command  # the CLI command that continues the run: `bagoftricks COMMAND --resume RUN`


def exit_code(e: BaseException) -> int:
    """The process exit status for an error that reached the command line."""
    if isinstance(e, TrainingInterrupted):
        return 128 + e.signum
    if isinstance(e, KeyboardInterrupt):
        return 130
    return 2 if isinstance(e, BadInput) else 1
