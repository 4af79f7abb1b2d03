"""bagoftricks: image classification with every trick of He et al. (CVPR 2019), and the measure of each.

The public face, loaded on first use (``import bagoftricks`` imports no torch):

    load_recipe, Recipe              a typed recipe from YAML or a shipped recipe's name, with overrides
    train -> Run                     a recipe trained into a run folder (Run: folder, metrics, top1, load_model())
    evaluate                         top-1/top-5 of a run or checkpoint on its test split
    load_model -> LoadedModel        a trained classifier with its preprocessing: .predict(images, topk)
    build_model, list_models         the zoo, by our names and timm's (resnet50d)
    export                           safetensors, ONNX, torch.export, timm/torchvision weights, verified
    run_transfer -> Run              §6: the backbone under Faster R-CNN or FCN
    run_ablation, make_report        a ladder or grid of tricks x seeds, and its page with 95 % intervals

Everything else lives in the subpackages (recipe, data, models, tricks, engine, transfer, deploy,
ablate, report) and may change between versions.
"""
from __future__ import annotations

from bagoftricks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Recipe": "recipe",
    "LoadedModel": "engine.inference",
    **dict.fromkeys(("Run", "build_model", "evaluate", "export", "list_models", "load_model", "load_recipe",
                     "make_report", "run_ablation", "run_transfer", "train"), "api"),
}
__all__ = sorted([*_EXPORTS, "__version__"])

__getattr__ = lazy_exports(__name__, _EXPORTS)
