"""The recipe's detection/segmentation data: its splits (the readers) and batches of them.

The augmentation of a batch is transfer/augment.py's; its random draws come from torch's global
generator, which the training step seeds from (seed, epoch, step), so a resumed run draws the same.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch
from torchvision.transforms import v2

from bagoftricks.data.catalog import DEFAULT_ROOTS, TRANSFER_DATASETS
from bagoftricks.data.registry import reused
from bagoftricks.errors import RecipeError
from bagoftricks.recipe import Recipe
from bagoftricks.transfer.augment import apply
from bagoftricks.transfer.targets import IGNORE, SceneSplit


def load_transfer_split(r: Recipe, split: str) -> SceneSplit:
    """Split 'train' or 'test' of the recipe's detection/segmentation dataset (read once inside
    `bagoftricks.data.reuse_splits`: a budget's two builds)."""
    d, t = r.data, r.transfer
    count = t.train_scenes if split == "train" else t.test_scenes
    return reused(("transfer", d.name, d.root, split, d.image_size, d.strict, t.task, count),
                  lambda: _read_transfer_split(r, split))


def _read_transfer_split(r: Recipe, split: str) -> SceneSplit:
    d = r.data
    if d.name == "fmnist_scenes":
        from bagoftricks.transfer.scenes import load_scenes
        root = os.path.expanduser(d.root or DEFAULT_ROOTS["fashion_mnist"])
        count = r.transfer.train_scenes if split == "train" else r.transfer.test_scenes
        return load_scenes(root, split, count, d.image_size)
    if d.name in ("voc", "ade20k", "coco") and not d.root:
        raise RecipeError(f"data.root: {d.name} needs its folder (VOCdevkit, or the folder holding images/ and "
                          f"annotations/, or annotations/instances_*.json)")
    detect = r.transfer.task == "detect"
    if d.name == "voc":
        from bagoftricks.transfer.voc import load_voc
        return load_voc(d.root, split, detect, d.image_size, d.strict)
    if d.name == "ade20k":
        if detect:
            raise RecipeError("data.name: ade20k has label maps only; use it with transfer.task: segment")
        from bagoftricks.transfer.ade20k import load_ade20k
        return load_ade20k(d.root, split, d.image_size, d.strict)
    if d.name == "coco":
        if not detect:
            raise RecipeError("data.name: coco is read for its boxes only; use it with transfer.task: detect")
        from bagoftricks.transfer.coco import load_coco
        return load_coco(d.root, split, d.image_size, d.strict)
    raise RecipeError(f"data.name: {d.name!r} is a classification dataset; transfer trains on "
                      f"{', '.join(TRANSFER_DATASETS)}")


def load_transfer_splits(r: Recipe) -> tuple[SceneSplit, SceneSplit]:
    """The (train, test) splits of the recipe's dataset, with the same classes (ADE20K: up to the largest label
    in either split's maps)."""
    train, test = load_transfer_split(r, "train"), load_transfer_split(r, "test")
    if r.data.name == "ade20k":
        from bagoftricks.transfer.ade20k import used_classes
        classes = used_classes(train, test)
        train, test = replace(train, classes=classes), replace(test, classes=classes)
    return train, test


def batch_indices(order: torch.Tensor, batch_size: int, first: int = 0, drop_last: bool = True):
    """The sample indices of each batch of `order`, from batch `first` on."""
    n = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    for b in range(first, n):
        yield order[b * batch_size:(b + 1) * batch_size].tolist()


def load_batch(split: SceneSplit, indices: list[int], tf: v2.Compose) -> tuple[list[torch.Tensor], list[dict]]:
    """The transformed images (uint8) and targets of `indices`."""
    pairs = [apply(tf, split.images[i], split.targets[i]) for i in indices]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def segmentation_batch(images: list[torch.Tensor], targets: list[dict], mean: list[float], std: list[float]):
    """Normalised float [B, C, H, W] and int64 label maps [B, H, W] (IGNORE kept)."""
    x = torch.stack(images).float()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    y = torch.stack([t["mask"] for t in targets]).long()
    return (x - m) / s, y


__all__ = ["IGNORE", "batch_indices", "load_batch", "load_transfer_split", "load_transfer_splits",
           "segmentation_batch"]
