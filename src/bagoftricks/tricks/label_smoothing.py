"""Label smoothing (§5.2).

With one-hot targets, cross-entropy is minimised only as the true-class logit gap goes to +∞,
which encourages over-confident, unbounded logits. Smoothing the target makes the optimum finite:
the optimal gap between the true logit and every other logit becomes log((K-1)(1-ε)/ε).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .catalog import LABEL_SMOOTHING_FORMS


def _check_form(form: str) -> None:
    if form not in LABEL_SMOOTHING_FORMS:
        raise ValueError(f"unknown label smoothing form {form!r}; valid forms: {', '.join(LABEL_SMOOTHING_FORMS)}")


def smoothed_targets(labels: torch.Tensor, num_classes: int, eps: float, form: str = "paper") -> torch.Tensor:
    """Soft targets [B, K] (float32) for integer labels [B].

    form="paper"  (§5.2): q_true = 1 - ε, q_other = ε / (K - 1).
    form="uniform" (Szegedy et al.; timm/torchvision `label_smoothing=`): mix the one-hot with the
        uniform distribution, q = (1 - ε)·onehot + ε/K, i.e. q_true = 1 - ε + ε/K, q_other = ε/K.
    The uniform form with ε' = ε·K/(K-1) equals the paper form with ε. ε = 0 gives exactly one-hot.
    """
    _check_form(form)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1), got {eps}")
    if num_classes < 2:
        raise ValueError(f"label smoothing needs num_classes >= 2, got {num_classes}")
    onehot = F.one_hot(labels.long(), num_classes).float()
    if eps == 0.0:
        return onehot
    if form == "paper":
        other = eps / (num_classes - 1)
        return onehot * (1.0 - eps - other) + other
    return onehot * (1.0 - eps) + eps / num_classes


def optimal_logit_gap(num_classes: int, eps: float, form: str = "paper") -> float:
    """Gap z_true - z_other at the minimum of cross-entropy against smoothed targets.

    At the optimum softmax(z) = q, so the gap is log(q_true / q_other):
      paper form:   log((K-1)(1-ε)/ε)      (≈ 9.1 for K = 1000, ε = 0.1 — the number in §5.2)
      uniform form: log(1 + K(1-ε)/ε)      (≈ 9.1 as well for K = 1000, ε = 0.1: 9.105 vs 9.104)
    ε = 0 gives +inf (one-hot targets have no finite optimum).
    """
    _check_form(form)
    if eps == 0.0:
        return math.inf
    K = num_classes
    if form == "paper":
        return math.log((K - 1) * (1.0 - eps) / eps)
    return math.log(1.0 + K * (1.0 - eps) / eps)
