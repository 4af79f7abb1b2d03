"""The training step, written once: every task (classification, detection, segmentation), the loop,
`bench` and the wiring tests call `TrainStep`.

Per step, in this order: lr (warmup + step/cosine) -> the task's inputs (its seeded random draws,
augmentation, mixing) -> forward under autocast -> the task's loss -> guarded backward and optimizer
step (tricks.guarded_step: the one backward pass of training) -> lookahead sync (every k steps) -> EMA
update.

What differs between tasks is a `StepTask`: how a batch becomes the forward pass's inputs and how the
outputs become a loss (engine.classify.Classify for classification, transfer.job's tasks for §6).
Nothing in the step reads a tensor back to the host (unless the optimizer cannot skip a bad step on
the device); `StepMeter` accumulates the step's metrics on the device for the loop to read now and then.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn as nn
from torch.profiler import record_function

from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import autocast, schedule_position, scheduled_lr
from bagoftricks.errors import NonFiniteLoss
from bagoftricks.recipe import Recipe


class StepTask(Protocol):
    """What one kind of training adds to the step."""
    recipe: Recipe

    def inputs(self, batch: Any, epoch: int, s: int) -> Any:
        """Seed step (epoch, s)'s random streams, then turn the batch into what `forward` takes."""

    def forward(self, module: nn.Module, inputs: Any) -> Any:
        """The forward pass (called under the recipe's autocast)."""

    def loss(self, outputs: Any, inputs: Any) -> torch.Tensor:
        """The 0-d training loss (called outside autocast)."""

    def images(self, batch: Any) -> int:
        """How many images the batch holds (the meter's img/s)."""


class StepResult(NamedTuple):
    loss: torch.Tensor     # 0-d, on the device
    skipped: torch.Tensor  # 0-d bool: the optimizer step was skipped (non-finite loss or gradients)
    bad: torch.Tensor      # 0-d bool: counts towards train.max_bad_steps
    lr: float
    images: int            # images in the batch


class TrainStep:
    """One optimizer step: `step(batch, epoch, s)` for step s of epoch `epoch`.

    `module` is what the forward pass calls: the plain `model`, or its compiled/DDP wrapper once
    `engine.setup.wrap_for_training` has set it. `model` (the plain module) is what EMA and lookahead
    read. The lr of every param group is the schedule's times the group's "lr_mult" (head, BN and
    backbone multipliers).
    """

    def __init__(self, recipe: Recipe, task: StepTask, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, *, device: torch.device, steps_per_epoch: int,
                 dinfo: bdist.DistInfo | None = None, ema: tricks.ModelEMA | None = None,
                 lookahead: tricks.Lookahead | None = None):
        self.recipe, self.task, self.model, self.module = recipe, task, model, model
        self.optimizer, self.scaler, self.ema, self.lookahead_state = optimizer, scaler, ema, lookahead
        self.device, self.steps_per_epoch = device, steps_per_epoch
        self.dinfo = dinfo or bdist.DistInfo()
        self.reduce_flag = (lambda f: bdist.all_reduce_max_flag(f, self.dinfo)) if self.dinfo.enabled else None
        # train.compile "step" puts its compiled (or, on a GPU, captured) update here (engine.compiled)
        self.core: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None

    def use_recipe(self, r: Recipe) -> None:
        """Step on with `r`, the run's recipe at another length (a budget's re-size: engine.budget.resize)."""
        self.recipe = self.task.recipe = r

    def set_lr(self, epoch: int, s: int) -> float:
        gstep = epoch * self.steps_per_epoch + s
        lr = scheduled_lr(self.recipe, gstep, self.steps_per_epoch, self.dinfo.world_size)
        for group in self.optimizer.param_groups:  # a group with "until_step" trains until then (stem bias)
            live = gstep < group.get("until_step", gstep + 1)
            value = lr * group.get("lr_mult", 1.0) if live else 0.0
            if isinstance(group["lr"], torch.Tensor):  # a captured step reads it from the device
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        return lr

    def __call__(self, batch: Any, epoch: int, s: int) -> StepResult:
        r = self.recipe
        lr = self.set_lr(epoch, s)
        with record_function("data+augment"):
            inputs = self.task.inputs(batch, epoch, s)
        loss, skipped = self.update(inputs) if self.core is None else self.core(inputs)
        with record_function("backward+step"):
            self.lookahead(epoch, s)
            if self.ema is not None:
                self.ema.update(self.model, r.tricks.ema_decay, skip=skipped)
        return StepResult(loss, skipped, self.bad_step(loss, skipped), lr, self.task.images(batch))

    def update(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward under autocast, the task's loss, the guarded backward and optimizer step: (loss, skipped)."""
        with record_function("forward+loss"):
            with autocast(self.recipe.train.precision, self.device):
                outputs = self.task.forward(self.module, inputs)
            loss = self.task.loss(outputs, inputs)
        with record_function("backward+step"):
            self.optimizer.zero_grad(set_to_none=True)
            # every rank skips together (DDP's averaged gradients, plus an all-reduce of the flag)
            skipped = tricks.step_with_scaler(self.scaler, self.optimizer, loss, reduce_flag=self.reduce_flag)
        return loss, skipped

    def lookahead(self, epoch: int, s: int) -> None:
        """Every tricks.lookahead_every steps: the slow weights step towards the fast ones, which are reset
        to them, with a decay ramped over the planned length of the run."""
        tk = self.recipe.tricks
        gstep = epoch * self.steps_per_epoch + s
        if self.lookahead_state is None or not tricks.is_sync_step(gstep, tk.lookahead_every):
            return
        at, total = schedule_position(self.recipe, gstep, self.steps_per_epoch)
        decay = tricks.lookahead_decay(at + 1, total, tk.lookahead_decay, tk.lookahead_ramp)
        self.lookahead_state.sync(self.model, decay)

    def bad_step(self, loss: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
        """A non-finite loss, or (without fp16's loss scaling, where an overflow is routine) a skipped step."""
        if not self.scaler.is_enabled():
            return skipped
        bad = ~torch.isfinite(loss.detach())
        return self.reduce_flag(bad) if self.reduce_flag is not None else bad  # every rank counts alike


class StepMeter:
    """The training metrics of a stretch of steps, accumulated on the device.

    Nothing here is read back to the host per step: the loop reads the meter every
    train.log_every_steps steps, at the end of the epoch and before a checkpoint. The count of
    consecutive bad steps and the global step at which it reached train.max_bad_steps carry over
    from the `previous` meter (the run stops naming that exact step, read back a little later).
    """

    def __init__(self, device: torch.device, previous: StepMeter | None = None):
        z = lambda dtype: torch.zeros((), dtype=dtype, device=device)
        self.loss_sum, self.seen, self.skipped = z(torch.float64), z(torch.float64), z(torch.int64)
        self.images = 0  # images stepped over, host-side (for img/s)
        if previous is None:
            self.bad_run, self.failed_at, self.max_bad = z(torch.int64), z(torch.int64) - 1, 0
        else:
            self.bad_run, self.failed_at, self.max_bad = previous.bad_run, previous.failed_at, previous.max_bad

    def add(self, res: StepResult, gstep: int, max_bad: int) -> None:
        n = res.images
        loss = res.loss.detach()
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss.double() * n, 0.0)
        self.seen += finite.double() * n
        self.skipped += res.skipped.long()
        self.bad_run = (self.bad_run + 1) * res.bad.long()
        self.failed_at = torch.where((self.failed_at < 0) & (self.bad_run >= max_bad), gstep, self.failed_at)
        self.images += n
        self.max_bad = max_bad

    def raise_if_failed(self, steps: int) -> None:
        g = int(self.failed_at)
        if g >= 0:
            raise NonFiniteLoss(f"loss was not finite for {self.max_bad} consecutive steps, last at epoch "
                                f"{g // steps + 1} step {g % steps} (global step {g}); the bad steps were "
                                f"skipped and no checkpoint was written after them")

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(float(self.seen), 1.0)
