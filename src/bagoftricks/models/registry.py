"""The one constructor the engine and the CLI call: :func:`build_model`, over the presets of
:data:`catalog.MODELS`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .catalog import MODELS, ModelSpec, default_image_size, list_models, model_spec, split_variant
from .airbench import AirbenchNet, dirac_init
from .inception import InceptionV3
from .layers import init_weights, set_batchnorm
from .mobilenet import MobileNetV1
from .resnet import resnet, resnet_small

__all__ = ["MODELS", "ModelSpec", "build_model", "default_image_size", "list_models"]

# build_model's options that every family understands, and those only some do.
_COMMON = ("init", "activation", "bn_eps", "bn_momentum")
_RESNET_ONLY = ("variant", "width", "se_reduction", "groups", "width_per_group", "drop_path")
_OPTIONS = {
    "resnet": _COMMON + _RESNET_ONLY,
    "resnet_small": _COMMON + _RESNET_ONLY,
    "mobilenet": _COMMON + ("width_mult",),
    "inception": _COMMON,
    "airbench": _COMMON + ("width", "stem", "dirac", "stem_bias"),
}


def build_model(
    arch: str,
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    variant: str | None = None,
    width: int = 0,
    init: str = "xavier",
    activation: str = "relu",
    se_reduction: int = 0,
    groups: int = 1,
    width_per_group: int = 0,
    drop_path: float = 0.0,
    width_mult: float = 1.0,
    stem: str = "learned",
    bn_eps: float = 0.0,
    bn_momentum: float = 0.0,
    dirac: bool = False,
    stem_bias: bool = False,
) -> nn.Module:
    """Build and initialise a registered model.

    arch             a name from :func:`list_models`, or a ResNet's with its variant letter as timm
                     writes them: "resnet50d" is ResNet-50-D, "resnet50c" C (timm's plain "resnet50"
                     is our B: build_model("resnet50b") or variant="B").
    num_classes      logits out. in_channels: image channels (1 for Fashion-MNIST).
    variant          ResNet tweak of §4: "A" (original), "B" (stride on the 3×3), "C" (B + 3×3×3 stem),
                     "D" (C + avg-pool shortcut). Case-insensitive. ResNets only. None: the letter of a
                     variant name, else "A" (the paper's baseline).
    width            ResNet base width w (stem/first stage); 0 = 64 ImageNet, 16 small family.
    init             "xavier" (§2; the paper) or "kaiming" (He et al. 2015).
    activation       one of relu, silu (= swish), gelu, leaky_relu, hardswish, mish; used everywhere.
    se_reduction     r > 0: squeeze-and-excitation in every residual block, hidden max(C // r, 8). ResNets.
    groups, width_per_group   ResNeXt cardinality and per-group width (0 = 64 // groups). ResNets.
    drop_path        stochastic depth, the last block's drop probability, in [0, 1). ResNets.
    width_mult       MobileNet's α (0.25, 0.5, 0.75, 1.0). MobileNet only.
    stem             "learned", or "whiten" (frozen; set by ``tricks.fit_whitening``). airbench only.
    bn_eps, bn_momentum   every BatchNorm's eps and running-statistics momentum; 0 = the architecture's own
                     (torch's 1e-5 and 0.1; Inception's eps 1e-3).
    dirac            the 3×3 convolutions start as the identity on their first channels. airbench only.
    stem_bias        the stem has a bias (airbench trains it for its first epochs). airbench only.

    A preset's own values (ResNeXt's groups, SE-ResNet's se_reduction) apply whenever the caller leaves that
    option at its default. An option the architecture does not have, set to a non-default value, is a
    ``ValueError``: a setting that silently changes nothing is a bug.
    """
    arch, variant = _resolve_variant(arch, variant)
    spec = model_spec(arch)
    given = dict(variant=variant, width=width, init=init, activation=activation, se_reduction=se_reduction,
                 groups=groups, width_per_group=width_per_group, drop_path=drop_path, width_mult=width_mult,
                 stem=stem, bn_eps=bn_eps, bn_momentum=bn_momentum, dirac=dirac, stem_bias=stem_bias)
    opts = _options(spec, given)
    kw = {k: v for k, v in opts.items() if k not in ("init", "bn_eps", "bn_momentum", "dirac")}
    model = _construct(spec, num_classes, in_channels, kw)
    init_weights(model, opts["init"])
    set_batchnorm(model, opts["bn_eps"], opts["bn_momentum"])  # 0: the architecture's own
    if opts.get("dirac"):
        dirac_init(model)
    model.arch = arch  # for logs and checkpoints; plain attribute, not in the state dict
    return model


def _resolve_variant(arch: str, variant: str | None) -> tuple[str, str]:
    """(registered arch, ResNet variant letter) from a name that may carry the letter and the variant argument."""
    arch, named = split_variant(arch)
    if isinstance(variant, str):
        variant = variant.upper()
    if named is not None and variant not in (None, named):
        raise ValueError(f"arch {arch + named.lower()!r} is ResNet variant {named}, but variant={variant!r} was given")
    return arch, variant or named or "A"


def _construct(spec: ModelSpec, num_classes: int, in_channels: int, kw: dict[str, Any]) -> nn.Module:
    """The family's constructor called with the preset's depth and the resolved options."""
    builders: dict[str, Callable[..., nn.Module]] = {
        "resnet": lambda: resnet(spec.depth, num_classes=num_classes, in_channels=in_channels, **kw),
        "resnet_small": lambda: resnet_small(spec.depth, num_classes=num_classes, in_channels=in_channels, **kw),
        "mobilenet": lambda: MobileNetV1(num_classes, in_channels, **kw),
        "inception": lambda: InceptionV3(num_classes, in_channels, **kw),
        "airbench": lambda: AirbenchNet(num_classes, in_channels, **kw),
    }
    return builders[spec.family]()


def _options(spec: ModelSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The options of ``spec``'s family: the caller's value, or the preset's where the caller left
    the default. A non-default value of an option the family lacks is a ``ValueError``."""
    defaults = {k: p.default for k, p in inspect.signature(build_model).parameters.items() if k in given}
    defaults["variant"] = "A"
    opts = {k: (spec.defaults[k] if v == defaults[k] and k in spec.defaults else v) for k, v in given.items()}
    allowed = _OPTIONS[spec.family]
    unsupported = [k for k, v in opts.items() if k not in allowed and v != defaults[k]]
    if unsupported:
        bad = ", ".join(f"{k}={opts[k]!r}" for k in unsupported)
        raise ValueError(f"{bad}: not an option of arch {spec.name!r}; its options are {', '.join(allowed)}")
    return {k: opts[k] for k in allowed}
