"""Test-set logits of a trained run, for the report's logit-gap (Figure 4) and confusion-matrix figures.

The model and the evaluation data are rebuilt from the checkpoint's own recipe by the engine's
checkpoint evaluator, the one `bagoftricks eval` uses.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bagoftricks.engine.inference import evaluate_checkpoint


def logits_on_test_set(run: str | Path, device: str = "cpu", use_ema: bool = False) -> dict:
    """{"logits": (N, K) float tensor, "labels": (N,), "classes", "recipe", "top1", "checkpoint"}.

    `run` is a run folder (its newest valid checkpoint, i.e. the final weights of a finished run) or
    a checkpoint file.
    """
    return evaluate_checkpoint(run, device=device, use_ema=use_ema, want_logits=True)


def logit_gaps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the largest other logit, per image (> 0 exactly when top-1 is right)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels[:, None], float("-inf"))
    return true - other.max(dim=1).values


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(dim=1)
    idx = labels * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
