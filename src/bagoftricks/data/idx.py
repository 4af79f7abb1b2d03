"""Fashion-MNIST in the IDX format (LeCun's MNIST layout), gzipped or not.

IDX layout: a 4-byte big-endian magic ``0x0000 <dtype> <ndim>`` (dtype 0x08 = unsigned byte), then
``ndim`` big-endian uint32 dimensions, then the payload. Images are magic 0x00000803 ([N, 28, 28]),
labels 0x00000801 ([N]). Every check happens here, at load time, so a truncated download fails before
training starts instead of mid-epoch.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import torch

from bagoftricks.errors import DataError

from .common import TensorDataset, read_bytes

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

_HOW_TO_GET = (
    "get the files with `bagoftricks download fashion_mnist` (official files, MD5-checked) "
    "or `apt-get install dataset-fashion-mnist` (installs them in /usr/share/datasets/fashion-mnist)"
)


def _partial_gunzip(raw: bytes) -> bytes:
    """Decompress as much of a damaged gzip stream as possible (only used to word the error)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(raw)
    except zlib.error:
        return b""


def read_idx_bytes(path: str) -> bytes:
    """The decompressed bytes of an IDX file; a damaged gzip is a DataError naming the file."""
    raw = read_bytes(path)
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        part = _partial_gunzip(raw)
        detail = f"decompressed only {len(part)} bytes"
        if len(part) >= 8:
            ndim = part[3]
            if len(part) >= 4 + 4 * ndim:
                dims = struct.unpack(f">{ndim}I", part[4 : 4 + 4 * ndim])
                expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
                detail = f"expected {expected} bytes (from its IDX header), got {len(part)}"
        raise DataError(
            f"{path}: truncated or corrupt gzip ({type(e).__name__}: {e}); {detail}. "
            f"Delete it and {_HOW_TO_GET}"
        ) from e


def parse_idx(data: bytes, path: str, magic: int) -> np.ndarray:
    """Check the header and the size it implies, and return the uint8 payload reshaped to its dims."""
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file: expected at least 4 bytes, got {len(data)}")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise DataError(
            f"{path}: wrong IDX magic: expected 0x{magic:08x}, got 0x{found:08x} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'} file expected; file is {len(data)} bytes)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: expected at least {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{path}: size does not match its IDX header {list(dims)}: expected {expected} bytes, got {len(data)}"
            + (" (truncated download?)" if len(data) < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(root: str, stem: str) -> str:
    """``root/stem.gz`` or ``root/stem``; a missing file is a DataError saying how to get it."""
    for name in (stem + ".gz", stem):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    raise DataError(f"Fashion-MNIST file not found: {os.path.join(root, stem)}[.gz]; {_HOW_TO_GET}")


def load_fashion_mnist(root: str, split: str, train_limit: int = 0) -> TensorDataset:
    prefix = "train" if split == "train" else "t10k"
    img_path = find_idx(root, f"{prefix}-images-idx3-ubyte")
    lbl_path = find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images = parse_idx(read_idx_bytes(img_path), img_path, IMAGES_MAGIC)
    labels = parse_idx(read_idx_bytes(lbl_path), lbl_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels: "
            f"expected {images.shape[0] + 8} bytes in the labels file, got {labels.shape[0] + 8}"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: expected 28x28 images, got {images.shape[1]}x{images.shape[2]}")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{lbl_path}: labels must be in 0..9, found {int(labels.max())}")
    if split == "train" and train_limit > 0:
        images, labels = images[:train_limit], labels[:train_limit]
    x = torch.from_numpy(images.copy()).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y, list(FASHION_MNIST_CLASSES))
