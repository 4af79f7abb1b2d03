"""Learning-rate schedules: linear scaling and warmup (§3.1), step and cosine decay (§5.1).

Everything is a pure function of the iteration index, so the engine can set the lr of each
iteration directly (no scheduler object whose state must be checkpointed) and the report can plot
the exact curve a recipe will use.
"""
from __future__ import annotations

import math
from typing import Any

KINDS = ("step", "cosine", "linear")


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """Linear scaling rule (§3.1): lr = lr_per_256 · b / 256.

    A larger batch gives a gradient estimate with smaller variance, so a proportionally larger step
    is safe; the paper's reference point is lr 0.1 for b = 256.
    """
    if global_batch <= 0:
        raise ValueError(f"global_batch must be positive, got {global_batch}")
    return lr_per_256 * global_batch / 256.0


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Number of warmup iterations m = round(warmup_epochs · steps_per_epoch)."""
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    return int(round(warmup_epochs * steps_per_epoch))


def lr_at(
    step: float,
    *,
    base_lr: float,
    steps_per_epoch: int,
    epochs: int = 0,
    total_steps: int = 0,
    warmup_epochs: float = 0.0,
    kind: str = "step",
    milestones: tuple[float, ...] = (30, 60, 90),
    gamma: float = 0.1,
    floor: float = 0.0,
) -> float:
    """Learning rate of iteration `step` (0-based), set per iteration, not per epoch. `step` may be a fraction: a
    position on the schedule between iterations (a run its budget re-sized: engine.derive.schedule_position).

    Warmup (§3.1): for i < m = round(warmup_epochs · steps_per_epoch), lr_i = base_lr · i / m.
    Early on all parameters are far from a solution and a large lr is numerically unstable
    (especially after linear scaling); ramping from 0 avoids the blow-up.

    After warmup:
      - "step": base_lr · gamma^k, k = number of milestones e with step >= round(e · steps_per_epoch).
        Milestones are absolute epochs, as in the paper (§2: ÷10 at 30, 60, 90) and the authors'
        reference script: warmup eats into the first constant phase, it does not shift the drops.
        A milestone inside the warmup applies from the end of the warmup.
      with t = step - m:
      - "cosine" (§5.1): floor + (base_lr - floor) · ½ (1 + cos(π t / T)).
      - "linear": floor + (base_lr - floor) · (1 - t / T).
    T = total_steps - 1 - m, so the *last* iteration that is run (step total_steps - 1) gets
    exactly `floor` (the paper writes T = total batches; the difference is one iteration and this
    choice makes lr_curve end at the floor). Steps past the end stay at the floor. The run's length
    is `total_steps` when given (a length in steps), else epochs · steps_per_epoch.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    total = total_steps or epochs * steps_per_epoch
    if steps_per_epoch <= 0 or total <= 0:
        raise ValueError(f"steps_per_epoch and the length (epochs or total_steps) must be positive, got "
                         f"{steps_per_epoch}, {epochs} epochs, {total_steps} steps")
    m = warmup_steps(warmup_epochs, steps_per_epoch)
    if step < m:
        return base_lr * step / m
    if kind == "step":
        passed = sum(1 for e in milestones if step >= round(e * steps_per_epoch))
        return base_lr * gamma**passed
    t = step - m
    T = max(1, total - 1 - m)
    frac = min(t, T) / T
    if kind == "cosine":
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return floor + (base_lr - floor) * (1.0 - frac)  # linear


def lr_curve(**schedule: Any) -> list[float]:
    """lr_at for every iteration of the run (total_steps, or epochs·steps_per_epoch); lr_at's keyword arguments."""
    total = schedule.get("total_steps") or schedule["epochs"] * schedule["steps_per_epoch"]
    return [lr_at(s, **schedule) for s in range(total)]
