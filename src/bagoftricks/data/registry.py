"""One entry point over every dataset: ``load_split`` and ``dataset_stats``."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bagoftricks.errors import DataError

from .catalog import DATASETS, DEFAULT_ROOTS, STATS, TRANSFER_DATASETS
from .common import TensorDataset

if TYPE_CHECKING:
    from .imagefolder import ImageFolderDataset

__all__ = ["DATASETS", "DEFAULT_ROOTS", "MEMORY_LIMIT_BYTES", "dataset_stats", "load_split", "reuse_splits", "reused"]

# An ImageFolder split is decoded into one in-memory TensorDataset (fast, batched augmentation on the
# device) when it takes at most this many bytes both at its stored sizes and after the resize to one
# size; larger folders are read per image through DataLoader workers. 2 GiB is ~10k ImageNet-size
# images, and fits next to a ResNet-50 on any 16 GB accelerator.
MEMORY_LIMIT_BYTES = 2 << 30


def _check_name(name: str) -> None:
    if name in TRANSFER_DATASETS:
        raise DataError(f"data.name: {name!r} is a detection/segmentation dataset; train on it with "
                        f"`bagoftricks transfer --task detect|segment`, or choose one of {', '.join(DATASETS)}")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def dataset_stats(name: str, channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel on the 0..255 scale.

    ``channels`` adapts the count when the images differ from the dataset's own (e.g. a 1-channel
    synthetic set): RGB stats are averaged to one value, one value is repeated.
    """
    _check_name(name)
    mean, std = STATS[name]
    if channels is None or channels == len(mean):
        return tuple(mean), tuple(std)
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    if len(mean) == 1:
        return mean * channels, std * channels
    raise DataError(f"dataset_stats: {name} has {len(mean)}-channel stats, cannot adapt them to {channels} channels")


class Loaded:
    """The splits read inside a `reuse_splits` block (`reused`: `load_split`'s, the §6 datasets'), by what each reader
    read them from, and the seconds that took."""

    def __init__(self) -> None:
        self.splits: dict[tuple, Any] = {}
        self.seconds = 0.0


_REUSE: Loaded | None = None


@contextlib.contextmanager
def reuse_splits() -> Iterator[Loaded]:
    """Inside the block, `load_split` (and the §6 readers) hand out again a split read for the same arguments
    instead of reading the files again: train.budget builds a run twice, once to time it and once to run it, and an
    image folder of 12,000 PNGs took 7 s to decode each time. Nothing that trains or evaluates changes a dataset it
    is given; the block's end lets them go. Yields what was read (`Loaded`: its `seconds` are not spent a second
    time)."""
    global _REUSE
    outer, _REUSE = _REUSE, Loaded()
    try:
        yield _REUSE
    finally:
        _REUSE = outer


def reused(key: tuple, read: Callable[[], Any]) -> Any:
    """`read()`, or inside a `reuse_splits` block what it gave for the same `key` before (any reader of a split:
    `load_split`, the transfer datasets')."""
    if _REUSE is None:
        return read()
    if key not in _REUSE.splits:
        t0 = time.perf_counter()
        _REUSE.splits[key] = read()
        _REUSE.seconds += time.perf_counter() - t0
    return _REUSE.splits[key]


def load_split(name: str, root: str, split: str, **kw) -> TensorDataset | ImageFolderDataset:
    """`read_split`, or inside a `reuse_splits` block the split it read before for the same arguments."""
    return reused(("classify", name, root, split, *sorted(kw.items())), lambda: read_split(name, root, split, **kw))


def read_split(name: str, root: str, split: str, *, train_limit: int = 0, strict: bool = False,
               download: bool = False, image_size: int = 32, num_classes: int = 10, synthetic_samples: int = 512,
               in_channels: int = 3, seed: int = 0, whole_images: bool = False,
               memory_limit_bytes: int = MEMORY_LIMIT_BYTES) -> TensorDataset | ImageFolderDataset:
    """Load one split ('train' or 'test') of a dataset, checking it fully before returning.

    root '' means DEFAULT_ROOTS[name]. train_limit > 0 keeps the first N training images (for
    imagefolder: a seeded random N, since the first N sorted files would be whole classes).
    image_size, num_classes, synthetic_samples, in_channels: synthetic only, except image_size, which
    is also the training resolution used to pick the in-memory size of an imagefolder split.
    download: fetch missing official files first (fashion_mnist, cifar10, cifar100).

    Returns a TensorDataset, except for an imagefolder whose decoded size exceeds memory_limit_bytes:
    then an ImageFolderDataset (per image, stored sizes). An imagefolder that fits is returned as a
    TensorDataset: at its stored size if all images share one, else with every image's shorter edge
    resized to round(image_size / 0.875) (256 for 224, the eval resize) and centre-cropped square —
    or, with whole_images (the training split for the §2 random-resized crop), the whole image resized
    to fit that square with its aspect kept, held in its top-left corner with its size in ``sizes``.
    Pass memory_limit_bytes=0 to always get the per-image dataset.
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if train_limit < 0:
        raise DataError(f"train_limit must be >= 0, got {train_limit}")
    if name == "synthetic":
        from .synthetic import make_synthetic

        return make_synthetic(split, samples=synthetic_samples, image_size=image_size, num_classes=num_classes,
                              in_channels=in_channels, seed=seed, train_limit=train_limit)
    if not root:
        if name not in DEFAULT_ROOTS:
            raise DataError(f"{name}: a root folder is required (root/train/<class>/*, root/val/<class>/*)")
        root = DEFAULT_ROOTS[name]
    root = os.path.expanduser(root)
    limit = train_limit if split == "train" else 0
    if name == "imagefolder":
        from .imagefolder import ImageFolderDataset

        ds = ImageFolderDataset(root, split, strict=strict, limit=limit, seed=seed)
        side = round(image_size / 0.875)
        same = len(set(ds.sizes)) == 1
        resized = ds.stored_bytes() if same else len(ds) * 3 * side * side
        if max(ds.stored_bytes(), resized) <= memory_limit_bytes:
            return ds.to_memory(None if same else side, whole=whole_images and split == "train")
        return ds
    if download:
        from .fetch import download as _download

        try:
            return _load(name, root, split, limit)
        except DataError:
            _download(name, root)
    return _load(name, root, split, limit)


def _load(name: str, root: str, split: str, limit: int) -> TensorDataset:
    if name == "fashion_mnist":
        from .idx import load_fashion_mnist

        return load_fashion_mnist(root, split, limit)
    from .cifar import load_cifar

    return load_cifar(name, root, split, limit)
