"""Batch-norm tweaks from the small-image speed records (not in the paper): frozen γ.

With γ fixed at 1 a BN layer only normalises and shifts; the scale a ReLU/GELU network needs is then
carried by the next layer's weights, so the learnable γ is redundant there and its gradient steps
only add noise (airbench trains its BN layers this way, with a raised lr on β: `bn_lr_mult` of
`tricks.no_bias_decay.param_groups`). The lr multiplier lives in the param groups; freezing is this function.
"""
from __future__ import annotations

import torch.nn as nn

from bagoftricks.tricks.no_bias_decay import BN_LAYERS


def freeze_bn_gamma(model: nn.Module) -> int:
    """Stop training the γ (weight) of every batch-norm layer of `model`, at its current value.

    Returns how many layers were frozen. Their γ keeps requires_grad=False, so `param_groups` leaves
    it out of the optimizer; it stays in the state dict (checkpoints, EMA) unchanged.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, BN_LAYERS) and m.weight is not None:
            m.weight.requires_grad_(False)
            n += 1
    return n
