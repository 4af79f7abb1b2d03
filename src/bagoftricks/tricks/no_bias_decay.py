"""No bias decay (§3.1): weight decay only on conv and fully-connected weights.

Weight decay is an L2 prior meant to keep the *filters* small. Biases and the affine γ, β of
normalisation layers are few, do not control the capacity the prior targets, and decaying γ/β
fights the normalisation (it pulls the layer's output scale toward 0). The paper therefore
decays conv/FC weights only; Table 4 (r) reports no gain from it: −0.34 at batch 1024, −0.03 at 256.
"""
from __future__ import annotations

import torch.nn as nn

# Layers whose `weight` is a filter/matrix that the L2 prior is meant for. Detected by type, not by
# ResNet structure, so any model (MobileNet, Inception, a test MLP) is split the same way.
DECAYED_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)


# Batch-norm layers (BN, SyncBN, their lazy forms) whose γ, β get their own lr with `bn_lr_mult`.
BN_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def param_groups(model: nn.Module, weight_decay: float, no_bias_decay: bool, head: str = "",
                 head_lr_mult: float = 1.0, bn_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer parameter groups.

    no_bias_decay=True -> two groups, always both present (the second may be empty):
      {"name": "decay", "params": weights of conv/linear layers, "weight_decay": weight_decay}
      {"name": "no_decay", "params": everything else (biases, BN/GN/LN γ and β, other params),
       "weight_decay": 0.0}
    no_bias_decay=False -> [{"name": "decay", "params": all params, "weight_decay": weight_decay}].

    bn_lr_mult != 1 -> batch-norm γ and β leave those groups for a third one, {"name": "bn",
    "weight_decay": 0.0 with no_bias_decay else weight_decay, "lr_mult": bn_lr_mult}.

    head, head_lr_mult != 1 -> each group is split in two: the parameters of the submodule `head` (the
    classifier, when fine-tuning a new one) go to "head_<name>" with "lr_mult": head_lr_mult (times the
    group's own), which the training step multiplies the scheduled lr by; the others stay in <name>.

    Only parameters with requires_grad are included; a parameter shared between modules appears
    once (in the group of the first module that owns it, in `named_modules` order).
    """
    seen: set[int] = set()
    decay, no_decay, bn = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if bn_lr_mult != 1.0 and isinstance(module, BN_LAYERS):
                bn.append(p)
            elif not no_bias_decay or (isinstance(module, DECAYED_LAYERS) and name == "weight"):
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay}]
    if no_bias_decay:
        groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    if bn_lr_mult != 1.0:
        groups.append({"name": "bn", "params": bn, "weight_decay": 0.0 if no_bias_decay else weight_decay,
                       "lr_mult": bn_lr_mult})
    if head and head_lr_mult != 1.0:
        return _split_head(groups, {id(p) for p in model.get_submodule(head).parameters()}, head_lr_mult)
    return groups


def _split_head(groups: list[dict], head_ids: set[int], mult: float) -> list[dict]:
    out = [dict(g, params=[p for p in g["params"] if id(p) not in head_ids]) for g in groups]
    out += [dict(g, name=f"head_{g['name']}", params=[p for p in g["params"] if id(p) in head_ids],
                 lr_mult=mult * g.get("lr_mult", 1.0)) for g in groups]
    return out
