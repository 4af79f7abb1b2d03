"""Knowledge distillation (§5.3).

A stronger pretrained teacher's softened output carries "dark knowledge" (which wrong classes are
plausible) that one-hot labels do not. The student is trained on both the labels and the teacher's
distribution at temperature T (paper: T = 20, teacher ResNet-152-D with cosine + label smoothing).
"""
from __future__ import annotations

import torch

from .loss import soft_cross_entropy


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets_soft: torch.Tensor,
    temperature: float,
    hard_weight: float = 1.0,
) -> torch.Tensor:
    """hard_weight · CE(p, softmax(z)) + T² · CE(softmax(r/T), softmax(z/T)), batch mean.

    CE(p, q) = -Σ_k p_k log q_k (p the target distribution, q the model's). r: teacher logits
    (detached here, no gradient ever reaches the teacher), z: student logits, p: the (possibly
    smoothed / mixed) targets. The T² factor keeps the soft term's gradient on the same scale as the
    hard term's: d/dz of the soft term is T·(softmax(z/T) - softmax(r/T)) / B per sample, whose size
    is roughly independent of T for large T.
    """
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    T = float(temperature)
    teacher_p = torch.softmax(teacher_logits.detach().float() / T, dim=-1)
    soft = soft_cross_entropy(student_logits.float() / T, teacher_p)
    hard = soft_cross_entropy(student_logits, targets_soft)
    return hard_weight * hard + T * T * soft
