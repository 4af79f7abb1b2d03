"""Lookahead-style weight averaging on a schedule (not in the paper; from the small-image speed records).

Every k optimizer steps the slow weights take an EMA step towards the fast (SGD) weights,
slow ← d·slow + (1−d)·fast, and the fast weights are then reset to the slow ones (Zhang et al. 2019,
"Lookahead Optimizer"; airbench uses it with k = 5). The decay ramps over training,
d(p) = decay · p^ramp at the fraction p of the run done, so early on the weights move freely (d ≈ 0)
and late in training the steps are averaged more and more strongly, which anneals the noise of the
last iterates the way a decaying lr does.

Built on `ModelEMA` (an fp32 copy of the weights; buffers are copied, not averaged). Nothing is read
back to the host: k, d and the step are host numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bagoftricks.tricks.ema import ModelEMA


def lookahead_decay(step: float, total_steps: int, decay: float, ramp: float) -> float:
    """d at global step `step` (0-based, counted after the step; a fraction where a budget re-sized the run) of
    `total_steps`: decay · (step/total)^ramp."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    p = min(max(step / total_steps, 0.0), 1.0)
    return decay * p ** ramp


def is_sync_step(step: int, every: int) -> bool:
    """Whether global step `step` (0-based) ends a stretch of `every` steps."""
    return every > 0 and (step + 1) % every == 0


class Lookahead:
    """The slow weights of a model: `sync(model, decay)` does slow ← d·slow + (1−d)·fast, fast ← slow."""

    def __init__(self, model: nn.Module) -> None:
        self.slow = ModelEMA(model)

    @torch.no_grad()
    def sync(self, model: nn.Module, decay: float) -> None:
        """One lookahead step. A skipped optimizer step left the fast weights as they were, so they
        are averaged in as usual."""
        self.slow.update(model, decay)
        self.slow.copy_to(model)

    def state_dict(self) -> dict:
        return self.slow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.slow.load_state_dict(state)
