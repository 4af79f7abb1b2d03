"""Model zoo: ResNet A–D (§4) for 224 px and 28–32 px inputs, ResNeXt/SE presets, MobileNet v1 and
Inception-V3, plus parameter/MAC counting and the zero-γ lookup.

    build_model("resnet50", variant="D")            # the paper's ResNet-50-D
    build_model("resnet20", 10, in_channels=1)      # Fashion-MNIST
    count_params_macs(model, (3, 224, 224))         # ResNet-50-D: (25_576_264, 4_328_824_832)
    features(model)                                 # stage outputs with channels and strides
    load_pretrained(model, "runs/r50")              # our run, a torchvision/timm state-dict file, or a model
                                                    # folder (local-dir:DIR, hf-hub:ORG/NAME); other input
                                                    # channels adapt the first conv

The names are loaded on first use, so that importing the torch-free ``catalog`` (preset names,
variants, activations) does not import torch.
"""
from __future__ import annotations


from bagoftricks.lazy import lazy_exports

# exported name -> the module that defines it
_EXPORTS = {
    "ACTIVATIONS": "catalog", "INITS": "catalog", "MODELS": "catalog", "VARIANTS": "catalog",
    "ModelSpec": "catalog", "default_image_size": "catalog", "list_models": "catalog",
    "count_params_macs": "analysis", "residual_last_bns": "analysis",
    "DropPath": "layers", "SqueezeExcite": "layers", "init_weights": "layers", "make_activation": "layers",
    "build_model": "registry",
    "load_pretrained": "pretrained", "freeze": "freezing", "classifier_head": "pretrained",
    "folder_model": "pretrained", "adapt_channels": "adapt",
    "StageFeatures": "stages", "StageInfo": "stages", "features": "stages",
    "FAMILIES": "resnet", "ResNet": "resnet",
    "SmallConv2d": "small_conv", "use_small_convs": "small_conv",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
