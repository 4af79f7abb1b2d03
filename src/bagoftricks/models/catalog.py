"""The model zoo as data: the registered presets, the ResNet variants of §4, the activations and the
initialisations, each listed once.

Nothing here imports torch, so a recipe can be checked against these names without loading it; the
builders of this package (``resnet.py``, ``layers.py``, ``registry.py``) read the same tables.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# model.stem: the first layer of the airbench family (models/airbench.py); other families: "learned" only.
STEMS = ("learned", "whiten")

__all__ = [
    "ACTIVATIONS",
    "FREEZE_POINTS",
    "STEMS",
    "INITS",
    "MODELS",
    "VARIANTS",
    "ModelSpec",
    "check_choice",
    "default_image_size",
    "list_models",
    "model_spec",
    "split_variant",
    "variant_names",
]


def check_choice(argument: str, value: object, choices: Collection) -> None:
    """Raise ``ValueError`` naming the argument, the bad value and the valid ones."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {argument} {value!r}; valid {argument} values: {valid}")


# The §4 tweaks, one row per variant.
#   stride_on: which conv of a downsampling *bottleneck* carries stride 2 ("conv1x1": the first 1×1
#              conv, ResNet-A; "conv3x3": the 3×3 conv, ResNet-B). Basic blocks ignore it.
#   stem:      "single" = one conv (7×7/2 for ImageNet, 3×3/1 for small inputs);
#              "deep"   = three 3×3 convs, widths (w/2, w/2, w), strides (2,1,1) ImageNet / (1,1,1) small.
#   shortcut:  for a block whose shape changes: "conv" = 1×1 conv with the block's stride + BN;
#              "avgpool+conv" = 2×2 avg-pool stride 2 then 1×1 conv stride 1 + BN when the block
#              downsamples (a plain 1×1 conv + BN when only the width changes).
VARIANTS: dict[str, dict[str, str]] = {
    "A": dict(stride_on="conv1x1", stem="single", shortcut="conv"),
    "B": dict(stride_on="conv3x3", stem="single", shortcut="conv"),
    "C": dict(stride_on="conv3x3", stem="deep", shortcut="conv"),
    "D": dict(stride_on="conv3x3", stem="deep", shortcut="avgpool+conv"),
}

# Activation name -> (torch.nn class name, its keyword arguments). "swish" is the name Ramachandran
# et al. (2017) gave to x·sigmoid(x), which torch calls SiLU; both names build the same module.
# In-place is safe everywhere the zoo uses an activation: each consumes a tensor nobody else reads.
ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("ReLU", dict(inplace=True)),
    "silu": ("SiLU", dict(inplace=True)),
    "swish": ("SiLU", dict(inplace=True)),
    "gelu": ("GELU", dict()),
    "leaky_relu": ("LeakyReLU", dict(negative_slope=0.01, inplace=True)),  # torch's default slope
    "hardswish": ("Hardswish", dict(inplace=True)),
    "mish": ("Mish", dict(inplace=True)),
}

# model.freeze: frozen up to and including this part of a ResNet ("" = nothing); see freezing.py.
FREEZE_POINTS = ("", "stem", "layer1", "layer2", "layer3", "layer4")

# xavier: the paper's §2; kaiming: He et al. (2015), as torchvision's ResNet. See layers.init_weights.
INITS = ("xavier", "kaiming")


@dataclass(frozen=True)
class ModelSpec:
    """A registered preset.

    ``family`` decides the constructor and which ``build_model`` options apply; ``defaults`` are
    the preset's values of those options (e.g. ResNeXt's ``groups``), used whenever the caller
    leaves the option at ``build_model``'s default; ``depth`` is the ResNet depth (0 otherwise).
    """

    name: str
    family: str  # "resnet" (224 px), "resnet_small" (28–32 px), "airbench" (28–32 px), "mobilenet", "inception"
    image_size: int  # native input resolution, pixels
    depth: int = 0
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


def _specs() -> dict[str, ModelSpec]:
    resnext = dict(groups=32, width_per_group=4)
    specs = [
        *(ModelSpec(f"resnet{d}", "resnet", 224, d, {}, f"ResNet-{d} (He et al. 2016), variants A–D")
          for d in (18, 34, 50, 101, 152)),
        *(ModelSpec(f"resnet{d}", "resnet_small", 32, d, {},
                    f"ResNet-{d} for 28–32 px inputs (He et al. 2016 §4.2), "
                    f"3 stages of {(d - 2) // 6} basic blocks")
          for d in (8, 14, 20, 32, 44, 56, 110)),
        ModelSpec("resnext50_32x4d", "resnet", 224, 50, resnext, "ResNeXt-50 32×4d (Xie et al. 2017)"),
        ModelSpec("resnext101_32x8d", "resnet", 224, 101, dict(groups=32, width_per_group=8), "ResNeXt-101 32×8d"),
        ModelSpec("seresnet50", "resnet", 224, 50, dict(se_reduction=16), "SE-ResNet-50 (Hu et al. 2018), r = 16"),
        ModelSpec("seresnext50_32x4d", "resnet", 224, 50, dict(resnext, se_reduction=16),
                  "SE-ResNeXt-50 32×4d, r = 16"),
        ModelSpec("airbench", "airbench", 32, 0, dict(activation="gelu", width=64),
                  "airbench-style net for 28–32 px (Jordan 2024): 2×2 stem, 3 conv–pool–BN–GELU groups "
                  "(w, 4w, 4w; w = 64), no residuals; model.stem: whiten freezes the stem to patch whitening"),
        ModelSpec("mobilenet_v1", "mobilenet", 224, 0, {}, "MobileNet v1 (Howard et al. 2017), width_mult α"),
        ModelSpec("inception_v3", "inception", 299, 0, {}, "Inception-V3 (Szegedy et al. 2016), no auxiliary head"),
    ]
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _specs()


def list_models() -> list[str]:
    return sorted(MODELS)


def model_spec(arch: str) -> ModelSpec:
    """The preset registered as ``arch``; ``ValueError`` listing the names otherwise."""
    check_choice("arch", arch, list_models())
    return MODELS[arch]


def default_image_size(arch: str) -> int:
    """Native input size: 224 for ImageNet ResNets and MobileNet, 32 for small ResNets, 299 for Inception."""
    return model_spec(arch).image_size


# A ResNet preset's name followed by its §4 variant letter names that variant: timm's convention for the
# variants it has (resnet50c, resnet50d, resnet18d ...), extended to every ResNet preset of ours and to
# all four letters (resnet50a is the paper's baseline; timm's plain `resnet50` is our ResNet-50-B).
_VARIANT_FAMILIES = ("resnet", "resnet_small")


def _variant_bases() -> list[str]:
    return [n for n, s in MODELS.items() if s.family in _VARIANT_FAMILIES and n.startswith("resnet") and s.depth
            and n == f"resnet{s.depth}"]


def variant_names() -> list[str]:
    """Every variant name: resnet50a ... resnet50d, resnet20d, ..."""
    return sorted(f"{base}{v.lower()}" for base in _variant_bases() for v in VARIANTS)


def split_variant(name: str) -> tuple[str, str | None]:
    """(preset, variant letter) of a variant name (resnet50d -> ("resnet50", "D")); (name, None) for any
    other name."""
    if len(name) > 1 and name[-1].upper() in VARIANTS and name[:-1] in _variant_bases():
        return name[:-1], name[-1].upper()
    return name, None
