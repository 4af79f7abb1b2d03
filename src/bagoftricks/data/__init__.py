"""Datasets, the paper's augmentation pipeline, and the batch sources the engine trains from.

    load_split(name, root, split, ...) -> TensorDataset | ImageFolderDataset
    dataset_stats(name) -> (mean, std) on the 0..255 scale
    download(name, root) -> verified official files
    BatchAugment / paper_train_transform / EvalTransform    (transforms.py)
    MemoryBatches / LoaderBatches / eval_batches            (batches.py)
"""

from .batches import LoaderBatches, MemoryBatches, eval_batches
from bagoftricks.errors import DataError

from .common import TensorDataset, derive_seed
from .fetch import download
from .imagefolder import ImageFolderDataset
from .registry import DATASETS, DEFAULT_ROOTS, MEMORY_LIMIT_BYTES, dataset_stats, load_split
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, BatchAugment, EvalTransform, paper_train_transform,
                         sample_params)

__all__ = [
    "DATASETS", "DEFAULT_ROOTS", "MEMORY_LIMIT_BYTES", "IMAGENET_MEAN", "IMAGENET_STD",
    "BatchAugment", "DataError", "EvalTransform", "ImageFolderDataset", "LoaderBatches", "MemoryBatches",
    "TensorDataset", "dataset_stats", "derive_seed", "download", "eval_batches", "load_split",
    "paper_train_transform", "sample_params",
]
