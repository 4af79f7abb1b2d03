"""The tricks of He et al. (CVPR 2019) and a few later ones, as pure functions.

One module per trick; nothing here reads the recipe — the engine maps recipe fields to these calls.
The names below are loaded on first use, so that importing a torch-free module of this package
(``catalog``, ``schedule``) does not import torch. No exported name is also a module's name, so
``tricks.X`` means the same whichever submodules were imported before (the function that applies a
trick to a batch is ``<trick>_batch`` where the trick's module has the trick's name).
"""
from __future__ import annotations

from bagoftricks.lazy import lazy_exports

# exported name -> the module that defines it
_EXPORTS = {
    "freeze_bn_gamma": "bn_tweaks",
    "epoch_flips": "alternating_flip", "flip_bits": "alternating_flip", "flip_where": "alternating_flip",
    "choose_mix": "cutmix", "cutmix_batch": "cutmix", "cutmix_box": "cutmix",
    "cutout_batch": "cutout", "random_erasing": "cutout",
    "distillation_loss": "distillation",
    "ModelEMA": "ema", "unwrap": "ema",
    "grads_nonfinite": "guarded_step", "loss_scaler": "guarded_step", "masked_step": "guarded_step",
    "skip_mode": "guarded_step", "skips_on_device": "guarded_step", "step_with_scaler": "guarded_step",
    "OptimizerChain": "optimizers", "build_optimizer": "optimizers", "prepare_state": "optimizers",
    "describe_optimizer": "optimizers",
    "Lookahead": "lookahead", "is_sync_step": "lookahead", "lookahead_decay": "lookahead",
    "optimal_logit_gap": "label_smoothing", "smoothed_targets": "label_smoothing",
    "soft_cross_entropy": "loss",
    "batch_permutation": "mixup", "mix": "mixup", "sample_lambda": "mixup",
    "param_groups": "no_bias_decay",
    "epoch_size": "progressive_resize", "resize_batch": "progressive_resize",
    "randaugment_batch": "randaugment",
    "lr_at": "schedule", "lr_curve": "schedule", "scaled_lr": "schedule", "warmup_steps": "schedule",
    "fit_whitening": "whitening", "patch_covariance": "whitening", "whitening_filters": "whitening",
    "Border": "tta", "shift_view": "tta", "tta_border": "tta", "tta_logits": "tta", "tta_mean": "tta",
    "tta_views": "tta",
    "zero_last_bn_gamma": "zero_gamma",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
