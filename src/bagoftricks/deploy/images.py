"""Image files for `predict`: the files a list of paths names, each decoded or given a reason why not.

A folder stands for every image file under it (recursively, hidden files and folders left out, in
sorted order), recognised by the extensions PIL opens, as for training folders; a file named
explicitly is always tried. A path that does not exist is reported like an unreadable file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from bagoftricks.data.images import as_channels, decode_rgb, image_extensions, probe
from bagoftricks.errors import DataError

def _walk(folder: Path, exts: frozenset[str]) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
    return found


def collect(paths: list[str]) -> list[str]:
    """The files to predict, in the order given (folders expanded, duplicates dropped)."""
    exts = image_extensions()
    out: list[str] = []
    for p in paths:
        out += _walk(Path(p), exts) if Path(p).is_dir() else [p]
    return list(dict.fromkeys(out))


def load_image(path: str, channels: int) -> torch.Tensor:
    """uint8 [channels, H, W]; DataError naming the file and the reason when it cannot be read."""
    if not os.path.exists(path):
        raise DataError(f"{path}: not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder with no image files")
    _, reason = probe(path, verify=True)  # the training folders' reasons: empty, not an image, truncated
    if reason is not None:
        raise DataError(f"{path}: {reason}")
    return as_channels(decode_rgb(path), channels, path)
