"""Freeze the first parts of a ResNet for fine-tuning (``model.freeze``).

``freeze(model, "layer2")`` stops the gradients of the stem, ``layer1`` and ``layer2``
(``requires_grad=False``, so the optimizer never holds them) and keeps their BatchNorms in eval mode
for good: their running statistics stay those of the pre-training, and the forward pass normalises
with them as at evaluation, whatever ``model.train()`` says later. The state dict is unchanged, so a
frozen model saves, resumes, exports and loads like any other.
"""
from __future__ import annotations

from torch import nn

from bagoftricks.models.catalog import FREEZE_POINTS, check_choice
from bagoftricks.models.resnet import ResNet

__all__ = ["freeze", "frozen_parts"]


def frozen_parts(model: nn.Module, upto: str) -> list[str]:
    """The top-level module names that ``upto`` freezes, in forward order ([] for "")."""
    check_choice("freeze point", upto, FREEZE_POINTS)
    if not upto:
        return []
    if not isinstance(model, ResNet):
        raise ValueError(f"model.freeze freezes ResNet stages; {type(model).__name__} has none")
    parts = ["conv1", "bn1"] + [f"layer{s + 1}" for s in range(model.num_stages)]
    if upto not in parts and upto != "stem":
        raise ValueError(f"model.freeze: {upto!r}, but the model has {model.num_stages} stages "
                         f"(layer1..layer{model.num_stages})")
    return parts[:2] if upto == "stem" else parts[:parts.index(upto) + 1]


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False  # a forward pre-hook: whatever train() set, this BN normalises as at evaluation


def freeze(model: nn.Module, upto: str) -> int:
    """Freeze ``model`` up to and including ``upto`` (see module docstring); returns the frozen tensors' count."""
    count = 0
    for name in frozen_parts(model, upto):
        part = getattr(model, name)
        for p in part.parameters():
            p.requires_grad_(False)
            count += 1
        for m in part.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_keep_eval)
                m.training = False
    return count
