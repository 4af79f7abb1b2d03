"""Model measurements (params, MACs) and the module lookup that zero-γ (§3) needs."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params_macs", "residual_last_bns", "zoo_summary"]


def _count_macs(model: nn.Module, x: torch.Tensor, tensors: dict | None) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if tensors is None:
            model(x)
        else:
            torch.func.functional_call(model, tensors, (x,))
    return int(counter.get_total_flops()) // 2


def count_params_macs(model: nn.Module, input_shape: tuple) -> tuple[int, int]:
    """Return (number of parameters, multiply-accumulates for one image).

    ``input_shape`` is (C, H, W) or (N, C, H, W); N is ignored and one image is counted. MACs are
    ``torch.utils.flop_counter.FlopCounterMode``'s total FLOPs / 2 (convs and matrix products; BN,
    pooling and activations count 0, the convention of the paper's Table 5), in eval mode without
    grad. The forward runs on the meta device against shape-only stand-ins of the weights, so it
    costs no compute and leaves ``model`` untouched; a model that cannot run on meta falls back to a
    real batch-1 forward on its own device.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")
    params = sum(p.numel() for p in model.parameters())

    was_training = model.training
    model.eval()
    try:
        try:
            named = itertools.chain(model.named_parameters(), model.named_buffers())
            meta = {name: torch.empty_like(t, device="meta") for name, t in named}
            macs = _count_macs(model, torch.empty((1, *shape), device="meta"), meta)
        except Exception:
            ref = next(itertools.chain(model.parameters(), model.buffers()), None)
            device = ref.device if ref is not None else torch.device("cpu")
            dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
            macs = _count_macs(model, torch.zeros((1, *shape), device=device, dtype=dtype), None)
    finally:
        model.train(was_training)
    return params, macs


def zoo_summary() -> list[dict]:
    """Every registered model, in the catalogue's order: family, native size, parameters and MACs of
    variant A there (3 input channels; 1000 classes, 10 for the 28–32 px families), the ResNet variants
    that apply and the description.

    Each model is built on the meta device, so nothing is allocated or initialised: counting the
    whole zoo takes seconds, and nothing is cached that could go stale.
    """
    from bagoftricks.models.catalog import MODELS, VARIANTS
    from bagoftricks.models.registry import build_model
    rows = []
    for name, spec in MODELS.items():
        num_classes = 10 if spec.image_size <= 32 else 1000
        with torch.device("meta"):
            model = build_model(name, num_classes, 3)
        params, macs = count_params_macs(model, (3, spec.image_size, spec.image_size))
        rows.append({"model": name, "family": spec.family, "image_size": spec.image_size, "num_classes": num_classes,
                     "params": params, "macs": macs,
                     "variants": list(VARIANTS) if spec.family.startswith("resnet") else [],
                     "description": spec.description})
    return rows


# torchvision's blocks, so zero-γ also works on torchvision ResNets: class name -> last BN.
_FOREIGN_LAST_BN = {"BasicBlock": "bn2", "Bottleneck": "bn3"}


def residual_last_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The last BN of every residual branch, in module order — what zero-γ (§3) sets to 0.

    Our blocks expose it as ``block.last_bn``; torchvision's ``BasicBlock``/``Bottleneck`` are
    recognised by name (``bn2``/``bn3``). Models without residual blocks give [].
    """
    found: list[nn.BatchNorm2d] = []
    for m in model.modules():
        bn = getattr(m, "last_bn", None) if hasattr(type(m), "last_bn") else None
        if bn is None and type(m).__name__ in _FOREIGN_LAST_BN and type(m).__module__.startswith("torchvision."):
            bn = getattr(m, _FOREIGN_LAST_BN[type(m).__name__], None)
        if isinstance(bn, nn.BatchNorm2d):
            found.append(bn)
    return found

