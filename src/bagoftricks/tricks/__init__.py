"""The tricks of He et al. (CVPR 2019) and a few later ones, as pure functions.

One module per trick; nothing here reads the recipe — the engine maps recipe fields to these calls.
"""
from .cutmix import choose_mix, cutmix, cutmix_box, mix_batch
from .cutout import cutout, random_erasing
from .distillation import distillation_loss
from .ema import ModelEMA, unwrap
from .fp16 import grads_nonfinite, loss_scaler, prepare_momentum, skips_on_device, step_with_scaler
from .label_smoothing import optimal_logit_gap, smoothed_targets
from .loss import soft_cross_entropy
from .mixup import batch_permutation, mix, sample_lambda
from .param_groups import param_groups
from .randaugment import randaugment
from .schedule import lr_at, lr_curve, scaled_lr, warmup_steps
from .zero_gamma import zero_last_bn_gamma

__all__ = [
    "batch_permutation", "choose_mix", "cutmix", "cutmix_box", "cutout", "distillation_loss",
    "grads_nonfinite", "loss_scaler", "lr_at", "lr_curve", "mix", "mix_batch", "ModelEMA", "optimal_logit_gap",
    "param_groups", "prepare_momentum", "random_erasing", "randaugment", "sample_lambda", "scaled_lr", "smoothed_targets",
    "skips_on_device", "soft_cross_entropy", "step_with_scaler", "unwrap", "warmup_steps", "zero_last_bn_gamma",
]
