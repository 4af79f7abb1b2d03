"""The choices of the tricks that a recipe is checked against, in a module that does not import
torch (the trick modules themselves do). The schedule kinds live in the torch-free ``schedule.py``.
"""
from __future__ import annotations

# Label smoothing (§5.2): "paper" puts ε/(K-1) on every wrong class, "uniform" mixes the one-hot
# with the uniform distribution (ε/K everywhere, timm/torchvision). See label_smoothing.py.
LABEL_SMOOTHING_FORMS = ("paper", "uniform")

# RandAugment magnitude scale: m in [0, RANDAUGMENT_BINS - 1], torchvision's 31-bin default.
RANDAUGMENT_BINS = 31

# Test-time augmentation (tta.py): the logits averaged over the image and its mirror ("flip"), and
# also over ±2-pixel shifts of both ("flip_shift").
TTA_MODES = ("none", "flip", "flip_shift")
