"""Fetch the official dataset files and check them against their published MD5s.

Fashion-MNIST: the four gz files from Zalando Research's official location. A file is accepted when
its own MD5 is the official archive MD5, or when the MD5 of its decompressed IDX payload is the
official payload MD5. The second rule accepts mirrors that re-compressed the same bytes (Debian's
``dataset-fashion-mnist`` ships re-gzipped files whose archive MD5 differs, payload MD5 identical) while
still rejecting any change to the data itself.

CIFAR: the python tarballs from Alex Krizhevsky's page, checked by archive MD5 and then extracted
(members must stay inside ``root``).

Every file is streamed to ``<final>.part-XXXX`` in the destination folder, checked, and only then
renamed; a failed check deletes it, so a bad download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zlib

from bagoftricks.errors import DataError

from .catalog import DEFAULT_ROOTS

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

# file -> (official archive MD5, official MD5 of the decompressed IDX payload)
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
# name -> (tarball, MD5, folder it extracts to)
CIFAR_TARBALLS = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}
DOWNLOADS = ("fashion_mnist", *CIFAR_TARBALLS)
_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 4 << 20  # smaller files download without a progress bar


def _md5_file(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5_gunzipped(path: str) -> str | None:
    """MD5 of the decompressed content, or None if it is not a complete gzip stream."""
    h = hashlib.md5(usedforsecurity=False)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(d.decompress(chunk))
            h.update(d.flush())
    except zlib.error:
        return None
    return h.hexdigest() if d.eof else None


def _check(path: str, md5: str, payload_md5: str | None) -> tuple[bool, str]:
    """(ok, description of what was found)."""
    actual = _md5_file(path)
    if actual == md5:
        return True, actual
    if payload_md5 is None:
        return False, f"expected md5 {md5}, got {actual}"
    payload = _md5_gunzipped(path)
    if payload == payload_md5:
        return True, actual
    got = payload if payload is not None else "none: not a complete gzip stream"
    return False, (f"expected md5 {md5}, got {actual} (decompressed content: expected md5 {payload_md5}, "
                   f"got {got})")


def _fetch(url: str, dest: str, md5: str, payload_md5: str | None = None) -> str:
    """Download url to dest through a temp file; verify; rename. Returns dest."""
    name = os.path.basename(dest)
    folder = os.path.dirname(dest) or "."
    if os.path.isfile(dest) and _check(dest, md5, payload_md5)[0]:
        return dest  # already there and intact
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.part-", dir=folder)
    except OSError as e:
        raise DataError(f"{folder}: cannot write the download there ({e}); pass a writable root") from e
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                bar = None
                if total >= _PROGRESS_MIN_BYTES:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
        except OSError as e:  # URLError is an OSError
            raise DataError(f"{url}: download failed ({e}); nothing was written to {dest}") from e
        ok, detail = _check(tmp, md5, payload_md5)
        if not ok:
            raise DataError(f"{dest}: checksum mismatch for {url}: {detail}; the file was deleted")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _safe_extract(tar_path: str, root: str) -> None:
    root_abs = os.path.realpath(root)
    with tarfile.open(tar_path, "r:gz") as tar:
        for m in tar.getmembers():
            target = os.path.realpath(os.path.join(root, m.name))
            if not (target == root_abs or target.startswith(root_abs + os.sep)) or m.issym() or m.islnk():
                raise DataError(f"{tar_path}: refusing to extract {m.name!r} (outside {root} or a link)")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(root)


def download(name: str, root: str, base_url: str | None = None) -> list[str]:
    """Download (if needed) and verify ``name`` into ``root``; returns the paths of the verified files.

    root '' means the dataset's default root. base_url replaces the official location (a folder URL,
    e.g. ``file:///tmp/mirror/``). Files already present and intact are not fetched again.
    """
    if name not in DOWNLOADS:
        raise DataError(f"download: {name!r} has no official download (choose {', '.join(DOWNLOADS)})")
    root = os.path.expanduser(root or DEFAULT_ROOTS[name])
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise DataError(f"{root}: cannot create the download folder ({e})") from e
    if base_url is not None and not base_url.endswith("/"):
        base_url += "/"
    if name == "fashion_mnist":
        base = base_url or FASHION_MNIST_URL
        return [_fetch(base + f, os.path.join(root, f), md5, payload)
                for f, (md5, payload) in FASHION_MNIST_MD5.items()]
    tarball, md5, folder = CIFAR_TARBALLS[name]
    path = _fetch((base_url or CIFAR_URL) + tarball, os.path.join(root, tarball), md5)
    _safe_extract(path, root)
    return [path, os.path.join(root, folder)]
