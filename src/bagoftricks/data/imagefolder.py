"""ImageNet-style folders: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``root/test``).

Class names are the sorted sub-folder names of ``root/train`` (when it exists), so the train and val
splits always agree on label indices; a val folder naming a class that train lacks is an error.
Files are found recursively under each class folder; only extensions that PIL can open are listed
(hidden files are ignored).

Unreadable files are found at construction, not mid-epoch: every listed file is opened and fully decoded
once by PIL in a thread pool (decoding releases the GIL). JPEGs are decoded in draft mode (DCT scaled
to 1/8), which still walks the whole entropy-coded stream, so truncation is detected at a fraction of
the cost. A truncated image is one where PIL's decoder runs out of data; this relies on PIL's
``ImageFile.LOAD_TRUNCATED_IMAGES`` being False (its default; a warning is issued if some other code
turned it on). Zero-byte, truncated and non-image files are skipped and listed in ``.skipped`` as
(path, reason); with ``strict=True`` the first one is a DataError naming it.

Probing and decoding are data/images.py's (RGB uint8 [3, H, W] at the stored size).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import ImageFile

from bagoftricks.errors import DataError

from bagoftricks.seeds import derive_seed

from .common import TensorDataset
from .images import decode_rgb, image_extensions, probe

_CHUNK = 64


def _split_dir(root: str, split: str) -> str:
    names = ["train"] if split == "train" else ["val", "test"]
    for n in names:
        d = os.path.join(root, n)
        if os.path.isdir(d):
            return d
    want = " or ".join(os.path.join(root, n) for n in names)
    raise DataError(f"imagefolder: {want} not found; expected the layout root/train/<class>/*, root/val/<class>/*")


def _class_dirs(d: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{d}: cannot list ({e})") from e


def _probe_chunk(args: tuple[list[str], bool]) -> list[tuple[tuple[int, int] | None, str | None]]:
    paths, verify = args
    return [probe(p, verify) for p in paths]


def _classes(root: str, d: str) -> list[str]:
    """The sorted class folders of root/train (of ``d`` when there is no train split); ``d`` may not
    name a class that they lack."""
    train_dir = os.path.join(root, "train")
    source = train_dir if os.path.isdir(train_dir) else d
    classes = _class_dirs(source)
    if not classes:
        raise DataError(f"imagefolder: no class folders in {source}")
    known = set(classes)
    extra = [c for c in _class_dirs(d) if c not in known]
    if extra:
        raise DataError(f"imagefolder: {d} has class folders missing from {train_dir}: {extra[:5]}")
    return classes


def _list_images(d: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Every file PIL can open under d/<class>/ (recursively, hidden ones skipped), in sorted order."""
    exts = image_extensions()
    paths, labels = [], []
    for label, c in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(d, c), followlinks=True):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in exts:
                    paths.append(os.path.join(dirpath, fn))
                    labels.append(label)
    if not paths:
        raise DataError(f"imagefolder: no image files under {d}/<class>/ (classes: {classes[:5]})")
    return paths, labels


def _threads(workers: int | None) -> int:
    return workers or min(32, (os.cpu_count() or 1) + 4)


def _probe_all(paths: list[str], verify: bool, workers: int | None) -> list[tuple[tuple[int, int] | None, str | None]]:
    """:func:`_probe` of every path, in order, in chunks over a thread pool."""
    chunks = [(paths[i : i + _CHUNK], verify) for i in range(0, len(paths), _CHUNK)]
    n_workers = _threads(workers)
    if len(chunks) == 1 or n_workers == 1:
        return [r for ch in chunks for r in _probe_chunk(ch)]
    with ThreadPoolExecutor(max_workers=n_workers) as ex:
        return [r for rs in ex.map(_probe_chunk, chunks) for r in rs]


class ImageFolderDataset(torch.utils.data.Dataset):
    """Per-image dataset: ``ds[i]`` is (uint8 [3, H, W] at the stored size, int label).

    Attributes: ``classes`` (sorted folder names), ``paths`` and ``labels`` (int64 tensor) of the good
    files, ``sizes`` ((H, W) of each), ``skipped`` ((path, reason) of the bad ones).
    """

    channels = 3  # always decoded to RGB

    def __init__(self, root: str, split: str = "train", *, strict: bool = False, verify: bool = True,
                 limit: int = 0, seed: int = 0, workers: int | None = None) -> None:
        root = os.path.expanduser(root)
        if not os.path.isdir(root):
            raise DataError(f"imagefolder: root folder {root} does not exist")
        d = _split_dir(root, split)
        self.classes = _classes(root, d)
        paths, labels = _list_images(d, self.classes)
        if limit > 0 and limit < len(paths):
            # A seeded subset, kept in folder order: the first N sorted files would be whole classes.
            g = torch.Generator().manual_seed(derive_seed(seed, "imagefolder-subset"))
            keep = torch.randperm(len(paths), generator=g)[:limit].sort().values.tolist()
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        if verify and ImageFile.LOAD_TRUNCATED_IMAGES:
            warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images will not be detected",
                          stacklevel=2)
        results = _probe_all(paths, verify, workers)
        self.paths: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        self.skipped: list[tuple[str, str]] = []
        good_labels: list[int] = []
        bad = sum(reason is not None for _, reason in results)
        for p, lab, (size, reason) in zip(paths, labels, results):
            if reason is None:
                self.paths.append(p)
                self.sizes.append(size)
                good_labels.append(lab)
            elif strict:
                raise DataError(f"{p}: {reason} (strict mode; {bad} bad file(s) under {d})")
            else:
                self.skipped.append((p, reason))
        if not self.paths:
            raise DataError(f"imagefolder: none of the {len(paths)} files under {d} could be read "
                            f"(first: {self.skipped[0][0]}: {self.skipped[0][1]})")
        self.labels = torch.tensor(good_labels, dtype=torch.int64)
        self.root, self.split_dir = root, d

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return decode_rgb(self.paths[i]), int(self.labels[i])

    def stored_bytes(self) -> int:
        """Bytes of the whole split decoded at the stored sizes."""
        return sum(3 * h * w for h, w in self.sizes)

    def to_memory(self, size: int | None, workers: int | None = None, whole: bool = False) -> TensorDataset:
        """Decode everything into one TensorDataset.

        When all images share one size they are kept as they are (size ignored). Otherwise each image's
        shorter edge is resized to ``size`` (bilinear, antialiased) and the centre ``size`` x ``size``
        square is kept, so one tensor can hold them all. With ``whole``, each image is instead resized
        so that it fits the ``size`` x ``size`` square with its aspect ratio kept, and held in the square's
        top-left corner (zeros elsewhere) with its own (h, w) in ``sizes``: a random-resized crop drawn
        within ``sizes`` sees the whole image, edges included, as on the per-image path.
        """
        same = len(set(self.sizes)) == 1
        if not same and not size:
            raise ValueError("to_memory: images differ in size; give the size to resize them to")
        fitted = [_fit(h, w, size) for h, w in self.sizes] if whole and not same else None

        def load(i: int) -> torch.Tensor:
            x = decode_rgb(self.paths[i])
            if same:
                return x
            return _fitted(x, size, fitted[i]) if fitted else _square(x, size)

        with ThreadPoolExecutor(max_workers=_threads(workers)) as ex:
            imgs = list(ex.map(load, range(len(self))))
        sizes = None if fitted is None else torch.tensor(fitted, dtype=torch.int64)
        return TensorDataset(torch.stack(imgs).contiguous(), self.labels.clone(), list(self.classes),
                             list(self.skipped), sizes)


def _fit(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) scaled so that the longer edge is ``size``, the aspect ratio kept (each edge >= 1)."""
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _to_uint8_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _square(x: torch.Tensor, size: int) -> torch.Tensor:
    from .transforms import resize_shorter_center_crop
    return _to_uint8_pixels(resize_shorter_center_crop(x, size, size))


def _fitted(x: torch.Tensor, size: int, hw: tuple[int, int]) -> torch.Tensor:
    """The whole image resized to ``hw``, in the top-left corner of a zero ``size`` x ``size`` canvas."""
    out = torch.zeros(x.shape[0], size, size, dtype=torch.uint8)
    small = torch.nn.functional.interpolate(x[None].float(), size=hw, mode="bilinear", align_corners=False,
                                            antialias=True)[0]
    out[:, : hw[0], : hw[1]] = _to_uint8_pixels(small)
    return out
