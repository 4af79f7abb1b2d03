"""Datasets, the paper's augmentation pipeline, and the batch sources the engine trains from.

    load_split(name, root, split, ...) -> TensorDataset | ImageFolderDataset
    reuse_splits()   a block inside which load_split reads each split once (a budget's two builds)
    dataset_stats(name) -> (mean, std) on the 0..255 scale
    download(name, root) -> verified official files
    BatchAugment / paper_train_transform / EvalTransform    (transforms.py)
    MemoryBatches / LoaderBatches / eval_batches            (batches.py)
    DeviceDecodeBatches   image folders decoded in batches on the device (device_decode.py)
    DATASETS / DEFAULT_ROOTS / AUGMENTS                     (catalog.py, torch-free)

The names are loaded on first use, so that importing the torch-free ``catalog`` does not import torch.
"""
from __future__ import annotations

from bagoftricks.errors import DataError as DataError  # re-exported: the error every reader raises
from bagoftricks.lazy import lazy_exports

# exported name -> the module that defines it
_EXPORTS = {
    "AUGMENTS": "catalog", "FLIP_MODES": "catalog", "DATASETS": "catalog", "DEFAULT_ROOTS": "catalog",
    "IMAGENET_MEAN": "catalog", "IMAGENET_STD": "catalog",
    "LoaderBatches": "batches", "MemoryBatches": "batches", "eval_batches": "batches",
    "DeviceDecodeBatches": "device_decode",
    "TensorDataset": "common",
    "download": "fetch",
    "ImageFolderDataset": "imagefolder",
    "select_classes": "subset", "split_holdout": "subset",
    "MEMORY_LIMIT_BYTES": "registry", "dataset_stats": "registry", "load_split": "registry",
    "reuse_splits": "registry",
    "BatchAugment": "transforms", "EvalTransform": "transforms", "paper_train_transform": "transforms",
    "sample_params": "transforms",
}
__all__ = sorted([*_EXPORTS, "DataError"])


__getattr__ = lazy_exports(__name__, _EXPORTS)
