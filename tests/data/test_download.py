"""download(): official MD5 table, temp-file-then-rename, no file left behind on a mismatch."""

import gzip
import hashlib
import io
import os
import shutil
import tarfile

import numpy as np
import pytest

from bagoftricks.data import DataError, download, load_split
import bagoftricks.data.fetch as dl

REAL = "/usr/share/datasets/fashion-mnist"
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    if not all(os.path.isfile(os.path.join(REAL, f)) for f in FILES):
        pytest.skip(f"{REAL} absent")
    m = tmp_path / "mirror"
    m.mkdir()
    for f in FILES:
        shutil.copy(os.path.join(REAL, f), m / f)
    return m


def leftovers(folder):
    return [n for n in os.listdir(folder) if ".part" in n]


def test_download_verifies_and_writes(mirror, tmp_path):
    dest = tmp_path / "dest"
    paths = download("fashion_mnist", str(dest), base_url=mirror.as_uri())
    assert sorted(os.path.basename(p) for p in paths) == sorted(FILES)
    for f in FILES:
        assert md5(dest / f) == md5(mirror / f)
    assert leftovers(dest) == []
    assert load_split("fashion_mnist", str(dest), "test").images.shape == (10000, 1, 28, 28)
    # Files present and intact are not fetched again: works with the mirror gone.
    shutil.rmtree(mirror)
    assert download("fashion_mnist", str(dest), base_url=mirror.as_uri()) == paths


def test_corrupted_archive_raises_with_both_md5s_and_leaves_nothing(mirror, tmp_path):
    p = mirror / "train-labels-idx1-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as e:
        download("fashion_mnist", str(dest), base_url=mirror.as_uri() + "/")
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg
    assert dl.FASHION_MNIST_MD5["train-labels-idx1-ubyte.gz"][0] in msg  # expected (official)
    assert md5(p) in msg  # actual
    assert not (dest / "train-labels-idx1-ubyte.gz").exists() and leftovers(dest) == []


def test_recompressed_modified_payload_is_rejected(mirror, tmp_path):
    """A valid gzip whose content differs from the official payload by one label."""
    p = mirror / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(p.read_bytes()))
    payload[100] = (payload[100] + 1) % 10
    p.write_bytes(gzip.compress(bytes(payload)))
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as e:
        download("fashion_mnist", str(dest), base_url=mirror.as_uri())
    msg = str(e.value)
    official, official_payload = dl.FASHION_MNIST_MD5["t10k-labels-idx1-ubyte.gz"]
    assert official in msg and official_payload in msg and hashlib.md5(payload).hexdigest() in msg
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists() and leftovers(dest) == []


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar_tarball_checked_and_extracted(tmp_path, monkeypatch):
    import pickle

    batch = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 4]}, protocol=2)
    blob = _tar({"cifar-10-batches-py/test_batch": batch})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "cifar-10-python.tar.gz").write_bytes(blob)
    # The official MD5 cannot match a fake tarball: first check it is enforced, then accept the fake.
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="c58f30108f718f92721af3b95e74349a"):
        download("cifar10", str(dest), base_url=mirror.as_uri())
    assert os.listdir(dest) == []
    monkeypatch.setitem(dl.CIFAR_TARBALLS, "cifar10",
                        ("cifar-10-python.tar.gz", hashlib.md5(blob).hexdigest(), "cifar-10-batches-py"))
    download("cifar10", str(dest), base_url=mirror.as_uri())
    assert load_split("cifar10", str(dest), "test").labels.tolist() == [3, 4]


def test_tarball_escaping_root_is_refused(tmp_path, monkeypatch):
    blob = _tar({"../evil.txt": b"x"})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "cifar-100-python.tar.gz").write_bytes(blob)
    monkeypatch.setitem(dl.CIFAR_TARBALLS, "cifar100",
                        ("cifar-100-python.tar.gz", hashlib.md5(blob).hexdigest(), "cifar-100-python"))
    with pytest.raises(DataError, match="refusing to extract"):
        download("cifar100", str(tmp_path / "dest"), base_url=mirror.as_uri())
    assert not (tmp_path / "evil.txt").exists()


def test_unreachable_and_unknown(tmp_path):
    with pytest.raises(DataError, match="download failed"):
        download("fashion_mnist", str(tmp_path / "d"), base_url=(tmp_path / "nowhere").as_uri())
    assert leftovers(tmp_path / "d") == []
    with pytest.raises(DataError, match="no official download"):
        download("imagefolder", str(tmp_path))
