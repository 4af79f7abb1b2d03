"""RandAugment (Cubuk et al. 2020; not in the paper — a later augmentation baseline).

Instead of a learned policy, apply `num_ops` ops drawn uniformly from a fixed list, all at one
global `magnitude` (0..30 on torchvision's 31-bin scale), with a random sign for the geometric and
colour-factor ops. The op list and the magnitude ranges follow torchvision.transforms.v2.RandAugment
so results are comparable, but every random choice comes from the caller's generator (torchvision's
class uses the global RNG), drawn for the whole batch up front.
"""
from __future__ import annotations

import math

import torch

from .catalog import RANDAUGMENT_BINS
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)


def apply_op(img: torch.Tensor, op: str, m: int, negative: bool) -> torch.Tensor:
    """One op on a [C, H, W] uint8 image at magnitude bin m (sign flipped if `negative`)."""
    # imported here: torchvision.transforms.v2 costs seconds at start-up, and most runs never need it
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode
    _NEAREST = InterpolationMode.NEAREST
    f = m / (RANDAUGMENT_BINS - 1)  # magnitude as a fraction of the op's maximum
    sign = -1.0 if negative else 1.0
    H, W = img.shape[-2:]
    if op == "Identity":
        return img
    if op in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(sign * 0.3 * f))  # shear factor up to 0.3
        shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                         interpolation=_NEAREST, fill=0, center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        size = W if op == "TranslateX" else H
        pixels = int(sign * 150.0 / 331.0 * size * f)  # up to ~45 % of the side
        translate = [pixels, 0] if op == "TranslateX" else [0, pixels]
        return TF.affine(img, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
                         interpolation=_NEAREST, fill=0)
    if op == "Rotate":
        return TF.rotate(img, angle=sign * 30.0 * f, interpolation=_NEAREST, fill=0)
    factor = 1.0 + sign * 0.9 * f  # colour factors in [0.1, 1.9]
    if op == "Brightness":
        return TF.adjust_brightness(img, factor)
    if op == "Color":
        return TF.adjust_saturation(img, factor)  # no-op on 1-channel images
    if op == "Contrast":
        return TF.adjust_contrast(img, factor)
    if op == "Sharpness":
        return TF.adjust_sharpness(img, factor)
    if op == "Posterize":
        return TF.posterize(img, bits=int(round(8 - 4 * f)))  # keep 8 .. 4 bits
    if op == "Solarize":
        return TF.solarize(img, threshold=255.0 * (1.0 - f))  # invert pixels above the threshold
    if op == "AutoContrast":
        return TF.autocontrast(img)
    if op == "Equalize":
        return TF.equalize(img)
    raise ValueError(f"unknown RandAugment op {op!r}")


def randaugment_batch(images_uint8: torch.Tensor, num_ops: int, magnitude: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Apply `num_ops` random ops per image to a uint8 batch [B, C, H, W] (C = 1 or 3).

    Per image and per op slot, the op (uniform over OPS) and the sign (p = ½) come from
    `generator`; num_ops = 0 returns the input unchanged. Returns a new uint8 tensor.
    """
    if num_ops < 0:
        raise ValueError(f"num_ops must be >= 0, got {num_ops}")
    if not 0 <= magnitude < RANDAUGMENT_BINS:
        raise ValueError(f"magnitude must be in [0, {RANDAUGMENT_BINS - 1}], got {magnitude}")
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
        raise ValueError(
            f"randaugment expects uint8 [B, C, H, W], got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    if num_ops == 0:
        return images_uint8
    B = images_uint8.shape[0]
    g, dev = generator, generator.device
    ops = torch.randint(0, len(OPS), (B, num_ops), generator=g, device=dev).tolist()
    negative = (torch.rand(B, num_ops, generator=g, device=dev) < 0.5).tolist()
    out = []
    for i in range(B):
        img = images_uint8[i]
        for k in range(num_ops):
            img = apply_op(img, OPS[ops[i][k]], magnitude, negative[i][k])
        out.append(img)
    return torch.stack(out)
