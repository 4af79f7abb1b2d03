"""The training step, written once: the loop, `bench` and the wiring test all call `TrainStep`.

Per step, in this order: lr (warmup + step/cosine) -> seeded generators -> progressive resize ->
(smoothed) targets -> mixup/CutMix -> Cutout/erasing -> forward under autocast (+ teacher) -> loss ->
guarded backward and optimizer step -> lookahead sync (every k steps) -> EMA update.

Determinism: every random draw of step s in epoch e comes from generators seeded with
(seed, e, s, rank): torch's global generator (dropout, drop-path), a generator on the batch's device
(per-image draws) and a CPU generator for the batch's scalars (mix choice, λ, the CutMix box), so
that no draw is read back from an accelerator. Nothing in the step reads a tensor back to the host;
`StepMeter` accumulates the step's metrics on the device for the loop to read now and then.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.setup import Training, autocast, planned_epochs, scheduled_lr
from bagoftricks.errors import NonFiniteLoss
from bagoftricks.recipe import Recipe
from bagoftricks.seeds import derive_seed


def make_targets(r: Recipe, y: torch.Tensor, num_classes: int, soft: bool) -> torch.Tensor | None:
    """Hard labels when nothing needs soft ones; else (smoothed) one-hot targets (§5.2)."""
    if not soft and r.tricks.label_smoothing == 0:
        return None
    return tricks.smoothed_targets(y, num_classes, r.tricks.label_smoothing, form=r.tricks.label_smoothing_form)


def mixing_active(r: Recipe, epoch: int) -> bool:
    """Mixup/CutMix are on and this epoch is not one of the last tricks.mix_off_epochs (of the planned length)."""
    t = r.tricks
    return (t.mixup_alpha > 0 or t.cutmix_alpha > 0) and epoch < planned_epochs(r, epoch) - t.mix_off_epochs


def prepare_batch(r: Recipe, x: torch.Tensor, y: torch.Tensor, num_classes: int, epoch: int, g: torch.Generator,
                  soft: bool, host_generator: torch.Generator | None = None):
    """Progressive resizing, targets, mixing and erasing for one batch: returns (x, targets or None).

    Per-image draws (partners, boxes, erasing) come from `g`, on the batch's device; the batch's
    scalars (mixup or CutMix, λ, the CutMix box) from `host_generator` (default: `g`). Smoothed
    targets are what mixup mixes, so the two compose.
    """
    t = r.tricks
    gh = host_generator if host_generator is not None else g
    x = tricks.resize_batch(x, tricks.epoch_size(r.data.progressive_sizes, epoch, r.data.image_size))
    mixing = mixing_active(r, epoch)
    targets = make_targets(r, y, num_classes, soft or mixing)
    if mixing:
        mode = tricks.choose_mix(t.mixup_alpha, t.cutmix_alpha, generator=gh)
        perm = tricks.batch_permutation(x.shape[0], g)
        if mode == "mixup":
            lam = tricks.sample_lambda(t.mixup_alpha, gh)
            x, targets = tricks.mix(x, targets, lam, perm)
        elif mode == "cutmix":
            lam = tricks.sample_lambda(t.cutmix_alpha, gh)
            x, targets, _ = tricks.cutmix(x, targets, lam, perm, gh)
    if t.cutout > 0:
        x = tricks.cutout(x, t.cutout, g)
    if t.random_erasing > 0:
        x = tricks.random_erasing(x, t.random_erasing, g)
    return x, targets


def compute_loss(r: Recipe, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
                 teacher_logits: torch.Tensor | None) -> torch.Tensor:
    """Distillation (§5.3), soft-target cross-entropy, or plain cross-entropy, in fp32."""
    logits = logits.float()
    if teacher_logits is not None:
        return tricks.distillation_loss(logits, teacher_logits.float(), targets, r.tricks.distill_temperature,
                                        r.tricks.distill_hard_weight)
    if targets is not None:
        return tricks.soft_cross_entropy(logits, targets)
    return F.cross_entropy(logits, y)


class StepResult(NamedTuple):
    loss: torch.Tensor     # 0-d, on the device
    skipped: torch.Tensor  # 0-d bool: the optimizer step was skipped (non-finite loss or gradients)
    bad: torch.Tensor      # 0-d bool: counts towards train.max_bad_steps
    lr: float


class TrainStep:
    """One optimizer step of a `Training`: `step(x, y, epoch, s)` for step s of epoch e.

    `module` is what the forward pass calls: the plain model, or its compiled/DDP wrapper once
    `engine.setup.wrap_for_training` has set it.
    """

    def __init__(self, t: Training):
        self.t = t
        self.module = t.model
        self.reduce_flag = (lambda f: bdist.all_reduce_max_flag(f, t.dinfo)) if t.dinfo.enabled else None

    def generators(self, epoch: int, s: int) -> tuple[torch.Generator, torch.Generator]:
        """Seed the global generator and return the device and host generators of step s of epoch `epoch`."""
        seed, rank, device = self.t.recipe.train.seed, self.t.dinfo.rank, self.t.device
        torch.manual_seed(derive_seed(seed, "step-global", epoch, s, rank))  # dropout, drop-path
        g = torch.Generator(device=device).manual_seed(derive_seed(seed, "step-device", epoch, s, rank))
        gh = torch.Generator().manual_seed(derive_seed(seed, "step-host", epoch, s, rank))
        return g, gh

    def set_lr(self, epoch: int, s: int) -> float:
        t = self.t
        lr = scheduled_lr(t.recipe, epoch * t.steps_per_epoch + s, t.steps_per_epoch, t.dinfo.world_size)
        for group in t.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)  # optim.head_lr_mult, tricks.bn_lr_mult groups
        return lr

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, s: int) -> StepResult:
        t, r = self.t, self.t.recipe
        lr = self.set_lr(epoch, s)
        g, gh = self.generators(epoch, s)
        with record_function("data+augment"):
            if r.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x, targets = prepare_batch(r, x, y, t.data.num_classes, epoch, g, t.teacher is not None,
                                       host_generator=gh)
        with record_function("forward+loss"):
            loss = self.forward_loss(x, y, targets)
        with record_function("backward+step"):
            t.optimizer.zero_grad(set_to_none=True)
            # every rank skips together (DDP's averaged gradients, plus an all-reduce of the flag)
            skipped = tricks.step_with_scaler(t.scaler, t.optimizer, loss, reduce_flag=self.reduce_flag)
            self.lookahead(epoch, s)
            if t.ema is not None:
                t.ema.update(t.model, r.tricks.ema_decay, skip=skipped)
        return StepResult(loss, skipped, self.bad_step(loss, skipped), lr)

    def lookahead(self, epoch: int, s: int) -> None:
        """Every tricks.lookahead_every steps: the slow weights step towards the fast ones, which are reset
        to them, with a decay ramped over the planned length of the run."""
        t, tk = self.t, self.t.recipe.tricks
        gstep = epoch * t.steps_per_epoch + s
        if t.lookahead is None or not tricks.is_sync_step(gstep, tk.lookahead_every):
            return
        total = planned_epochs(t.recipe, epoch) * t.steps_per_epoch
        t.lookahead.sync(t.model, tricks.lookahead_decay(gstep + 1, total, tk.lookahead_decay, tk.lookahead_ramp))

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        t = self.t
        with autocast(t.recipe.train.precision, t.device):
            logits = self.module(x)
            tlogits = None
            if t.teacher is not None:
                with torch.no_grad():
                    tlogits = t.teacher(x)  # the same augmented and mixed batch as the student (§5.3)
        return compute_loss(t.recipe, logits, y, targets, tlogits)

    def bad_step(self, loss: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
        """A non-finite loss, or (without fp16's loss scaling, where an overflow is routine) a skipped step."""
        if not self.t.scaler.is_enabled():
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

    def add(self, res: StepResult, n: int, gstep: int, max_bad: int) -> None:
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
