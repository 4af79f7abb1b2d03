"""Our ResNets in torchvision's and timm's key layouts, and back, as tables of data.

Our module names follow torchvision's ResNet (``resnet.py``), and the structures match (checked by
weight copy, see the "Structure" facts of the paper notes): torchvision's ResNet is our B variant;
timm's ``resnet*`` is B, ``resnet*c`` is C, ``resnet*d`` is D, and its SE-ResNet/ResNeXt presets are
our B with the same keys. The one layout difference: in timm's D, stage 1's shortcut (stride 1) keeps
an empty slot for the pool, so its conv and BN sit one index later than ours. Neither library has
ResNet-A, the small 28–32 px family, MobileNet v1 or our Inception-V3.

    counterparts(model, "timm")                # [Counterpart(name="resnet50d", ...)] or a WeightsError
    to_library(our_state, cp)                  # our keys -> the library's keys
    from_library(their_state, cp)              # the library's keys -> ours

Nothing here imports torch; the tables are plain data.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bagoftricks.errors import WeightsError

LIBRARIES = ("torchvision", "timm")

# Renaming rules, (their key prefix, our key prefix); the first rule whose prefix matches a key
# renames it, so the two directions are the same table read from either side.
SAME_KEYS: tuple[tuple[str, str], ...] = ()
TIMM_D_STAGE1: tuple[tuple[str, str], ...] = (
    ("layer1.0.downsample.1.", "layer1.0.downsample.0."),  # the conv after timm's empty pool slot
    ("layer1.0.downsample.2.", "layer1.0.downsample.1."),  # its BN
)

# (library, the library's model name, our arch, our variant, renaming rules)
_TABLE: tuple[tuple[str, str, str, str, tuple[tuple[str, str], ...]], ...] = (
    *(("torchvision", f"resnet{d}", f"resnet{d}", "B", SAME_KEYS) for d in (18, 34, 50, 101, 152)),
    ("torchvision", "resnext50_32x4d", "resnext50_32x4d", "B", SAME_KEYS),
    ("torchvision", "resnext101_32x8d", "resnext101_32x8d", "B", SAME_KEYS),
    *(("timm", f"resnet{d}", f"resnet{d}", "B", SAME_KEYS) for d in (18, 34, 50, 101, 152)),
    *(("timm", f"resnet{d}c", f"resnet{d}", "C", SAME_KEYS) for d in (50, 101, 152)),
    *(("timm", f"resnet{d}d", f"resnet{d}", "D", TIMM_D_STAGE1) for d in (18, 34, 50, 101, 152)),
    ("timm", "resnext50_32x4d", "resnext50_32x4d", "B", SAME_KEYS),
    ("timm", "resnext101_32x8d", "resnext101_32x8d", "B", SAME_KEYS),
    ("timm", "seresnet50", "seresnet50", "B", SAME_KEYS),
    ("timm", "seresnext50_32x4d", "seresnext50_32x4d", "B", SAME_KEYS),
)

# What works for a model without a counterpart (said in the error).
OWN_FORMATS = ("a bagoftricks run folder or checkpoint (.pt)", "a safetensors file written by `bagoftricks export "
               "--format safetensors`")


@dataclass(frozen=True)
class Counterpart:
    """A model of another library with our structure and (after renaming) our keys."""

    library: str
    name: str
    arch: str
    variant: str
    rules: tuple[tuple[str, str], ...]


COUNTERPARTS: tuple[Counterpart, ...] = tuple(Counterpart(*row) for row in _TABLE)


def describe(model: Any) -> tuple[str, str, bool]:
    """(arch, variant, plain): ``plain`` is False when an option the libraries lack is set (a width or an
    activation other than the preset's); non-ResNets have variant ''."""
    arch = getattr(model, "arch", type(model).__name__)
    variant = getattr(model, "variant", "")
    act = type(getattr(model, "act", None)).__name__
    plain = getattr(model, "family", "") == "imagenet" and getattr(model, "base_width", 64) == 64 and act == "ReLU"
    return arch, variant, plain


def counterparts_of(arch: str, variant: str, library: str | None = None) -> list[Counterpart]:
    return [c for c in COUNTERPARTS if c.arch == arch and c.variant == variant and library in (None, c.library)]


def counterparts(model: Any, library: str | None = None) -> list[Counterpart]:
    """``model``'s models in ``library`` (None: in either); a WeightsError saying why there is none and
    what works instead."""
    if library is not None and library not in LIBRARIES:
        raise WeightsError(f"unknown library {library!r}; choose one of {', '.join(LIBRARIES)}")
    arch, variant, plain = describe(model)
    found = counterparts_of(arch, variant, library)
    if found and plain:
        return found
    name = f"{arch}-{variant}" if variant else arch
    where = library or "torchvision or timm"
    if found:
        why = "its base width or activation differs from the library's model"
    elif counterparts_of(arch, variant):
        why = f"{library} has no model of that structure"
    else:
        why = "neither torchvision nor timm has a model of that structure (no ResNet-A, no 28-32 px ResNet, " \
              "no MobileNet v1, no Inception-V3 of ours)"
    have = [f"{c.library} {c.name} = {c.arch}-{c.variant}" for c in COUNTERPARTS if library in (None, c.library)]
    raise WeightsError(f"{name} has no {where} counterpart: {why}; the {where} layouts are {', '.join(have)}; "
                       f"for any model these work: {'; '.join(OWN_FORMATS)}")


def _rename(key: str, rules: tuple[tuple[str, str], ...], forward: bool) -> str:
    for theirs, ours in rules:
        src, dst = (theirs, ours) if forward else (ours, theirs)
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def from_library(state: Mapping[str, Any], cp: Counterpart) -> dict[str, Any]:
    """A state dict in ``cp``'s library layout, renamed to ours (values untouched)."""
    return {_rename(k, cp.rules, True): v for k, v in state.items()}


def to_library(state: Mapping[str, Any], cp: Counterpart) -> dict[str, Any]:
    """Our state dict renamed to ``cp``'s library layout (values untouched)."""
    return {_rename(k, cp.rules, False): v for k, v in state.items()}
