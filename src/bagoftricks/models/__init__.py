"""Model zoo: ResNet A–D (§4) for 224 px and 28–32 px inputs, ResNeXt/SE presets, MobileNet v1 and
Inception-V3, plus parameter/MAC counting and the zero-γ lookup.

    build_model("resnet50", variant="D")            # the paper's ResNet-50-D
    build_model("resnet20", 10, in_channels=1)      # Fashion-MNIST
    count_params_macs(model, (3, 224, 224))         # ResNet-50-D: (25_576_264, 4_328_824_832)
"""

from .analysis import count_params_macs, residual_last_bns, zero_init_last_bn
from .layers import ACTIVATIONS, INITS, DropPath, SqueezeExcite, init_weights, make_activation
from .registry import MODELS, ModelSpec, build_model, default_image_size, list_models
from .resnet import FAMILIES, VARIANTS, ResNet

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "INITS",
    "MODELS",
    "VARIANTS",
    "DropPath",
    "ModelSpec",
    "ResNet",
    "SqueezeExcite",
    "build_model",
    "count_params_macs",
    "default_image_size",
    "init_weights",
    "list_models",
    "make_activation",
    "residual_last_bns",
    "zero_init_last_bn",
]
