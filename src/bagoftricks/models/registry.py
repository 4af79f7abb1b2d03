"""Named presets and the one constructor the engine and the CLI call: :func:`build_model`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from collections.abc import Callable, Mapping

from torch import nn

from .inception import InceptionV3
from .layers import ACTIVATIONS, INITS, check_choice, init_weights
from .mobilenet import MobileNetV1
from .resnet import VARIANTS, resnet, resnet_small

__all__ = ["MODELS", "ModelSpec", "build_model", "default_image_size", "list_models"]

# build_model's options that every family understands, and those only some do.
_COMMON = ("init", "activation")
_RESNET_ONLY = ("variant", "width", "se_reduction", "groups", "width_per_group", "drop_path")
_OPTIONS = {
    "resnet": _COMMON + _RESNET_ONLY,
    "resnet_small": _COMMON + _RESNET_ONLY,
    "mobilenet": _COMMON + ("width_mult",),
    "inception": _COMMON,
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered preset.

    ``family`` decides the constructor and which :func:`build_model` options apply; ``defaults`` are
    the preset's values of those options (e.g. ResNeXt's ``groups``), used whenever the caller
    leaves the option at :func:`build_model`'s default; ``depth`` is the ResNet depth (0 otherwise).
    """

    name: str
    family: str  # "resnet" (224 px), "resnet_small" (28–32 px), "mobilenet", "inception"
    image_size: int  # native input resolution, pixels
    depth: int = 0
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


def _specs() -> dict[str, ModelSpec]:
    specs = [
        *(ModelSpec(f"resnet{d}", "resnet", 224, d, {}, f"ResNet-{d} (He et al. 2016), variants A–D")
          for d in (18, 34, 50, 101, 152)),
        *(ModelSpec(f"resnet{d}", "resnet_small", 32, d, {},
                    f"ResNet-{d} for 28–32 px inputs (He et al. 2016 §4.2), 3 stages of {(d - 2) // 6} basic blocks")
          for d in (8, 14, 20, 32, 44, 56, 110)),
        ModelSpec("resnext50_32x4d", "resnet", 224, 50, dict(groups=32, width_per_group=4), "ResNeXt-50 32×4d (Xie et al. 2017)"),
        ModelSpec("resnext101_32x8d", "resnet", 224, 101, dict(groups=32, width_per_group=8), "ResNeXt-101 32×8d"),
        ModelSpec("seresnet50", "resnet", 224, 50, dict(se_reduction=16), "SE-ResNet-50 (Hu et al. 2018), r = 16"),
        ModelSpec("seresnext50_32x4d", "resnet", 224, 50, dict(groups=32, width_per_group=4, se_reduction=16),
                  "SE-ResNeXt-50 32×4d, r = 16"),
        ModelSpec("mobilenet_v1", "mobilenet", 224, 0, {}, "MobileNet v1 (Howard et al. 2017), width_mult α"),
        ModelSpec("inception_v3", "inception", 299, 0, {}, "Inception-V3 (Szegedy et al. 2016), no auxiliary head"),
    ]
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _specs()


def list_models() -> list[str]:
    return sorted(MODELS)


def _spec(arch: str) -> ModelSpec:
    check_choice("arch", arch, list_models())
    return MODELS[arch]


def default_image_size(arch: str) -> int:
    """Native input size: 224 for ImageNet ResNets and MobileNet, 32 for small ResNets, 299 for Inception."""
    return _spec(arch).image_size


def build_model(
    arch: str,
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    variant: str = "A",
    width: int = 0,
    init: str = "xavier",
    activation: str = "relu",
    se_reduction: int = 0,
    groups: int = 1,
    width_per_group: int = 0,
    drop_path: float = 0.0,
    width_mult: float = 1.0,
) -> nn.Module:
    """Build and initialise a registered model.

    arch             a name from :func:`list_models`.
    num_classes      logits out. in_channels: image channels (1 for Fashion-MNIST).
    variant          ResNet tweak of §4: "A" (original), "B" (stride on the 3×3), "C" (B + 3×3×3 stem),
                     "D" (C + avg-pool shortcut). Case-insensitive. ResNets only.
    width            ResNet base width w (stem/first stage); 0 = 64 ImageNet, 16 small family.
    init             "xavier" (§2; the paper) or "kaiming" (He et al. 2015).
    activation       one of relu, silu (= swish), gelu, leaky_relu, hardswish, mish; used everywhere.
    se_reduction     r > 0: squeeze-and-excitation in every residual block, hidden max(C // r, 8). ResNets.
    groups, width_per_group   ResNeXt cardinality and per-group width (0 = 64 // groups). ResNets.
    drop_path        stochastic depth, the last block's drop probability, in [0, 1). ResNets.
    width_mult       MobileNet's α (0.25, 0.5, 0.75, 1.0). MobileNet only.

    A preset's own values (ResNeXt's groups, SE-ResNet's se_reduction) apply whenever the caller
    leaves that option at the default above. An option the architecture does not have, set to a
    non-default value, is a ``ValueError``: a setting that silently changes nothing is a bug.
    """
    spec = _spec(arch)
    if isinstance(variant, str):
        variant = variant.upper()
    check_choice("variant", variant, tuple(VARIANTS))
    check_choice("activation", activation, tuple(ACTIVATIONS))
    check_choice("init", init, INITS)

    given = dict(variant=variant, width=width, init=init, activation=activation, se_reduction=se_reduction,
                 groups=groups, width_per_group=width_per_group, drop_path=drop_path, width_mult=width_mult)
    defaults = {k: p.default for k, p in inspect.signature(build_model).parameters.items() if k in given}
    opts = {k: (spec.defaults[k] if v == defaults[k] and k in spec.defaults else v) for k, v in given.items()}

    allowed = _OPTIONS[spec.family]
    unsupported = [k for k, v in opts.items() if k not in allowed and v != defaults[k]]
    if unsupported:
        bad = ", ".join(f"{k}={opts[k]!r}" for k in unsupported)
        raise ValueError(
            f"{bad}: not an option of arch {arch!r}; its options are {', '.join(allowed)}"
        )

    kw = {k: opts[k] for k in allowed if k != "init"}
    builders: dict[str, Callable[..., nn.Module]] = {
        "resnet": lambda: resnet(spec.depth, num_classes=num_classes, in_channels=in_channels, **kw),
        "resnet_small": lambda: resnet_small(spec.depth, num_classes=num_classes, in_channels=in_channels, **kw),
        "mobilenet": lambda: MobileNetV1(num_classes, in_channels, **kw),
        "inception": lambda: InceptionV3(num_classes, in_channels, **kw),
    }
    model = builders[spec.family]()
    init_weights(model, opts["init"])
    model.arch = arch  # for logs and checkpoints; plain attribute, not in the state dict
    return model
