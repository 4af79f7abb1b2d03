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
# also over 1-pixel shifts of both, weighted half ("flip_shift", airbench94's).
TTA_MODES = ("none", "flip", "flip_shift")

# Optimizers (optim.name, optimizers.py) and the optim.* fields each reads besides optim.name, optim.lr,
# optim.weight_decay and optim.head_lr_mult, which every optimizer reads; a field an optimizer does not
# read, set away from its default, is an error. Muon reads its fallback optimizer's fields too.
OPTIMIZERS = ("sgd", "adamw", "lars", "lamb", "muon")
MUON_FALLBACKS = ("sgd", "adamw")
MUON_TAKES = ("filters", "hidden")
OPTIMIZER_FIELDS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "adamw": ("betas", "eps"),
    "lars": ("momentum", "nesterov", "eps", "trust_coefficient"),
    "lamb": ("betas", "eps"),
    "muon": ("nesterov", "muon_momentum", "ns_steps", "muon_takes", "fallback", "fallback_lr_mult"),
}
COMMON_OPTIM_FIELDS = ("name", "lr", "weight_decay", "head_lr_mult")


def optim_fields(name: str, fallback: str = "sgd") -> tuple[str, ...]:
    """The optim.* fields optimizer `name` reads (with Muon, its fallback's as well)."""
    own = COMMON_OPTIM_FIELDS + OPTIMIZER_FIELDS[name]
    return own + OPTIMIZER_FIELDS[fallback] if name == "muon" else own
