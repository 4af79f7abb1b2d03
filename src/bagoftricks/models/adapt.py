"""Pretrained weights for another number of input channels: the input convolution adapted, by one rule.

Weights trained on RGB images start grey (Fashion-MNIST, X-rays), multispectral or RGB-D runs all the
time. Only the first convolution sees the channels, so only its weight [out, C_file, k, k] changes:

* one channel: the sum over the file's channels. A grey image x shown to the file's network as C
  equal channels (x, x, x) gives sum_c W_c * x, so the adapted network computes on x exactly what
  the original computed on its grey RGB rendering.
* C channels (C > 1): the file's channels repeated in turn (R, G, B, R, ...) up to C and scaled by
  C_file / C, so the filters' total over channels keeps its size: an image whose channels are all
  alike gives the response its grey rendering gave before, exactly when C is a multiple of C_file and
  nearly otherwise (a trained stem's filters are much alike across R, G and B).

This is timm's rule (``adapt_input_conv``: sum for one channel, repeat and rescale otherwise), written
for any channel count of the file. The airbench network's 2×2 stem has 2·C·4 filters (the patch
whitening of ``tricks.whitening`` needs one per eigenvector of the C·4-dimensional patches), so its
shape and the next layer's depend on C: weights for another C do not fit, and that stays an error.
"""
from __future__ import annotations

import torch
from torch import nn

from bagoftricks.errors import WeightsError

__all__ = ["adapt_channels", "adapt_input_conv", "input_conv"]


def input_conv(model: nn.Module) -> str:
    """The state-dict key of the weight of the model's input convolution (its first ``nn.Conv2d``):
    'conv1.weight' (ResNet A/B), 'conv1.0.weight' (C/D deep stem), 'features.0.0.weight' (MobileNet),
    'stem.conv1a.0.weight' (Inception-V3), 'stem.weight' (airbench)."""
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if name is None:
        raise WeightsError(f"{type(model).__name__} has no convolution to adapt to the input channels")
    return f"{name}.weight"


def adapt_channels(weight: torch.Tensor, channels: int) -> tuple[torch.Tensor, str]:
    """``weight`` [out, C_file, kh, kw] for ``channels`` input channels (module docstring) and how it was
    adapted, for the log."""
    have = int(weight.shape[1])
    w = weight.float()
    if channels == 1:
        return w.sum(dim=1, keepdim=True).to(weight.dtype), f"summed over the file's {have}"
    repeats = -(-channels // have)
    adapted = w.repeat(1, repeats, 1, 1)[:, :channels] * (have / channels)
    return adapted.to(weight.dtype), f"the file's {have} repeated and scaled by {have}/{channels}"


def adapt_input_conv(model: nn.Module, state: dict[str, torch.Tensor], path: object) -> tuple[dict, str]:
    """``state`` (in the model's keys) with its input convolution adapted to the model's channels when only
    they differ, and the note for the log ('' when nothing was adapted). Any other difference is left to
    the key-by-key check, which names it."""
    key = input_conv(model)
    own = model.state_dict()[key]
    theirs = state.get(key)
    if theirs is None or theirs.dim() != 4 or theirs.shape[1] == own.shape[1]:
        return state, ""
    if getattr(model, "stem_kind", None) is not None:  # the airbench network (models/airbench.py)
        raise WeightsError(f"{path}: the weights are for {theirs.shape[1]}-channel images and the model takes "
                           f"{own.shape[1]}; the airbench network's stem has 2·C·4 filters for C channels, so its "
                           f"weights cannot be adapted to another channel count (start from scratch, or from an "
                           f"airbench run on {own.shape[1]}-channel images)")
    if theirs.shape[0] != own.shape[0] or theirs.shape[2:] != own.shape[2:]:
        return state, ""
    adapted, how = adapt_channels(theirs, int(own.shape[1]))
    note = f"; input conv {key} adapted from {theirs.shape[1]} to {own.shape[1]} channels ({how})"
    return {**state, key: adapted}, note
