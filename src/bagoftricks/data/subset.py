"""A class subset of a split (``data.class_subset``): e.g. pre-train on five Fashion-MNIST classes and
fine-tune on the other five.

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
