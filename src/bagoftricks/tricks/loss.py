"""Cross-entropy against soft targets (needed by label smoothing §5.2, mixup §5.4, CutMix)."""
from __future__ import annotations

import torch


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """mean over the batch of  -Σ_k q_k log softmax(z)_k.

    Computed in (at least) fp32 so that fp16/bf16 autocast logits do not lose the log-probabilities of the
    small classes; equals F.cross_entropy(logits, labels) when soft_targets is one-hot.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(soft_targets.shape)} differ in shape")
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp16/bf16 -> fp32, fp64 stays fp64
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    return -(soft_targets.to(dtype) * logp).sum(dim=-1).mean()
