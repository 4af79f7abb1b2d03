"""CIFAR-10 / CIFAR-100 in the official "python version" pickle layout.

Layouts accepted (``root`` may be the parent folder or the extracted folder itself)::

    cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   labels key: "labels"
    cifar-100-python/{train, test, meta}                              labels key: "fine_labels"

Each batch holds ``data``: uint8 [n, 3072] (1024 red, 1024 green, 1024 blue values, row-major 32x32).
The pickles are read with a restricted unpickler that can only rebuild numpy arrays, lists, dicts and
strings, so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import torch

from bagoftricks.errors import DataError

from .common import TensorDataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# name -> (folder inside the tarball, train files, test files, meta file, labels key, class-names key,
#          number of images per official file: only used to word the error for a truncated pickle)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "labels", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names", 100),
}
_OFFICIAL_COUNT = {"data_batch": 10000, "test_batch": 10000, "train": 50000, "test": 10000}
_PIXELS = 3 * 32 * 32

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not a numpy array)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _how_to_get(name: str) -> str:
    return f"get it with `bagoftricks download {name}` (official tarball, MD5-checked)"


def find_cifar_dir(name: str, root: str) -> str:
    folder, train, test, meta, *_ = LAYOUTS[name]
    for d in (os.path.join(root, folder), root):
        if os.path.isfile(os.path.join(d, test[0])) or os.path.isfile(os.path.join(d, train[0])):
            return d
    raise DataError(
        f"{name} not found: expected {os.path.join(root, folder)}/ (or {root}/ itself) to hold "
        f"{', '.join(train[:1] + test)}; {_how_to_get(name)}"
    )


def _get(d: dict, key: str):
    if key in d:
        return d[key]
    return d.get(key.encode())


def _unpickle(path: str) -> dict:
    size = -1
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file missing") from e
    except pickle.UnpicklingError as e:
        if "refusing" in str(e):
            raise DataError(f"{path}: {e}") from e
        raise _truncated(path, size, e) from e
    except Exception as e:  # truncated pickles also raise EOFError, ValueError, ...
        raise _truncated(path, size, e) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}")
    return obj


def _truncated(path: str, size: int, e: Exception) -> DataError:
    base = os.path.basename(path)
    kind = "data_batch" if base.startswith("data_batch") else base
    n = _OFFICIAL_COUNT.get(kind)
    hint = f"expected at least {n * _PIXELS} bytes ({n} images x {_PIXELS}), got {size}" if n else \
        f"got {size} bytes"
    return DataError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); truncated file? {hint}")


def _read_batch(path: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data, labels = _get(d, "data"), _get(d, labels_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: expected a 'data' array and a '{labels_key}' list")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = labels.shape[0]
    if data.dtype != np.uint8 or data.size != n * _PIXELS:
        raise DataError(
            f"{path}: 'data' must be uint8 [{n}, {_PIXELS}] for its {n} labels: expected {n * _PIXELS} bytes, "
            f"got {data.size * data.itemsize} ({data.dtype}, shape {list(data.shape)})"
        )
    return data.reshape(n, 3, 32, 32), labels


def load_cifar(name: str, root: str, split: str, train_limit: int = 0) -> TensorDataset:
    folder, train, test, meta, labels_key, names_key, k = LAYOUTS[name]
    d = find_cifar_dir(name, root)
    files = train if split == "train" else test
    xs, ys = [], []
    kept = 0
    for fname in files:
        path = os.path.join(d, fname)
        if not os.path.isfile(path):
            raise DataError(f"{name}: missing {path}; {_how_to_get(name)}")
        x, y = _read_batch(path, labels_key)
        if y.size and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{path}: labels must be in 0..{k - 1}, found {int(y.min())}..{int(y.max())}")
        xs.append(x)
        ys.append(y)
        kept += len(y)
        if split == "train" and 0 < train_limit <= kept:
            break  # later batches are not needed
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    if split == "train" and train_limit > 0:
        x, y = x[:train_limit], y[:train_limit]
    classes = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(k)]
    meta_path = os.path.join(d, meta)
    if os.path.isfile(meta_path):
        names = _get(_unpickle(meta_path), names_key)
        if names is not None and len(names) == k:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), list(classes))
