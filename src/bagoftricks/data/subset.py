"""A class subset of a split (``data.class_subset``): e.g. pre-train on five Fashion-MNIST classes and
fine-tune on the other five; and a validation split held out of training (``data.holdout``).

The kept classes are relabelled 0..k-1 in the order given, so the model has k outputs and
``classes`` lists their names in that order; images of the other classes are dropped.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from bagoftricks.errors import DataError

from .common import TensorDataset


def select_classes(ds, keep: Sequence[int]):
    """``ds`` (a TensorDataset or ImageFolderDataset) with only the classes ``keep``, relabelled."""
    k = len(ds.classes)
    bad = [c for c in keep if not 0 <= c < k]
    if bad:
        raise DataError(f"data.class_subset: {bad} not in 0..{k - 1} (the dataset has {k} classes: "
                        f"{', '.join(ds.classes[:12])}{', ...' if k > 12 else ''})")
    remap = torch.full((k,), -1, dtype=torch.int64)
    remap[list(keep)] = torch.arange(len(keep))
    new = remap[ds.labels]
    mask = new >= 0
    classes = [ds.classes[c] for c in keep]
    if isinstance(ds, TensorDataset):
        sizes = ds.sizes[mask].contiguous() if ds.sizes is not None else None
        return TensorDataset(ds.images[mask].contiguous(), new[mask], classes, list(ds.skipped), sizes=sizes)
    out = copy.copy(ds)
    idx = mask.nonzero().flatten().tolist()
    out.paths, out.sizes = [ds.paths[i] for i in idx], [ds.sizes[i] for i in idx]
    out.labels, out.classes = new[mask], classes
    return out


def split_holdout(ds: TensorDataset, n: int) -> tuple[TensorDataset, TensorDataset]:
    """(the first len - n images, the last n) of an in-memory split: a validation split held out of training."""
    if not 0 < n < len(ds):
        raise DataError(f"data.holdout: {n} images cannot be held out of a training split of {len(ds)}")
    k = len(ds) - n
    return (TensorDataset(ds.images[:k], ds.labels[:k], ds.classes),
            TensorDataset(ds.images[k:], ds.labels[k:], ds.classes))
