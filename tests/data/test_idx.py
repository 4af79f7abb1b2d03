"""Fashion-MNIST IDX reading: good files, every kind of damage, and the real data set."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from bagoftricks.data import DataError, dataset_stats, load_split

REAL = "/usr/share/datasets/fashion-mnist"


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write(path, data: bytes, gz: bool) -> str:
    path = str(path) + (".gz" if gz else "")
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture
def tiny(tmp_path):
    """5 train images (gzipped) and 3 test images (plain), random pixels, labels 0..4 / 7,8,9."""
    rng = np.random.default_rng(0)
    tr_x, tr_y = rng.integers(0, 256, (5, 28, 28)), np.arange(5)
    te_x, te_y = rng.integers(0, 256, (3, 28, 28)), np.array([7, 8, 9])
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(tr_x, 0x803), gz=True)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(tr_y, 0x801), gz=True)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(te_x, 0x803), gz=False)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(te_y, 0x801), gz=False)
    return tmp_path, (tr_x, tr_y, te_x, te_y)


def test_good_pair_loads_gz_and_plain(tiny):
    root, (tr_x, tr_y, te_x, te_y) = tiny
    tr = load_split("fashion_mnist", str(root), "train")
    te = load_split("fashion_mnist", str(root), "test")
    assert tr.images.shape == (5, 1, 28, 28) and tr.images.dtype == torch.uint8 and tr.images.is_contiguous()
    assert torch.equal(tr.images[:, 0], torch.from_numpy(tr_x.astype(np.uint8)))
    assert tr.labels.tolist() == [0, 1, 2, 3, 4] and tr.labels.dtype == torch.int64
    assert torch.equal(te.images[:, 0], torch.from_numpy(te_x.astype(np.uint8)))
    assert te.labels.tolist() == [7, 8, 9]
    assert tr.classes[0] == "T-shirt/top" and len(tr.classes) == 10


def test_train_limit_is_a_prefix_and_ignored_for_test(tiny):
    root, (tr_x, *_ ) = tiny
    lim = load_split("fashion_mnist", str(root), "train", train_limit=2)
    assert torch.equal(lim.images[:, 0], torch.from_numpy(tr_x[:2].astype(np.uint8)))
    assert len(load_split("fashion_mnist", str(root), "test", train_limit=2)) == 3


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload_names_file_and_sizes(tmp_path, gz):
    x = np.zeros((4, 28, 28), np.uint8)
    full = idx_bytes(x, 0x803)
    p = write(tmp_path / "train-images-idx3-ubyte", full[:-100], gz=gz)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.arange(4), 0x801), gz=False)
    with pytest.raises(DataError) as e:
        load_split("fashion_mnist", str(tmp_path), "train")
    msg = str(e.value)
    assert os.path.basename(p) in msg
    assert f"expected {len(full)} bytes" in msg and f"got {len(full) - 100}" in msg


def test_wrong_magic(tmp_path):
    x = np.zeros((2, 28, 28), np.uint8)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(x, 0x801)[:4] + idx_bytes(x, 0x803)[4:], gz=True)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.arange(2), 0x801), gz=True)
    with pytest.raises(DataError) as e:
        load_split("fashion_mnist", str(tmp_path), "test")
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert "expected 0x00000803" in msg and "got 0x00000801" in msg


def test_truncated_gzip_names_file_and_sizes(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)  # random: barely compresses
    raw = gzip.compress(idx_bytes(x, 0x803), mtime=0)
    with open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[: len(raw) // 2])
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.arange(6), 0x801), gz=True)
    with pytest.raises(DataError) as e:
        load_split("fashion_mnist", str(tmp_path), "train")
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "gzip" in msg
    assert f"expected {16 + 6 * 784} bytes" in msg and "got " in msg


def test_count_mismatch_names_both_files(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((3, 28, 28)), 0x803), gz=False)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.arange(2), 0x801), gz=False)
    with pytest.raises(DataError) as e:
        load_split("fashion_mnist", str(tmp_path), "train")
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert "expected 11 bytes" in msg and "got 10" in msg


def test_labels_out_of_range(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28)), 0x803), gz=False)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([1, 12]), 0x801), gz=False)
    with pytest.raises(DataError, match="0..9"):
        load_split("fashion_mnist", str(tmp_path), "train")


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as e:
        load_split("fashion_mnist", str(tmp_path), "train")
    msg = str(e.value)
    assert str(tmp_path / "train-images-idx3-ubyte") in msg
    assert "bagoftricks download fashion_mnist" in msg and "apt-get install dataset-fashion-mnist" in msg


@pytest.fixture(scope="module")
def real_train():
    if not os.path.isfile(os.path.join(REAL, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"{REAL} absent")
    return load_split("fashion_mnist", "", "train")  # '' = the default root


def test_real_fashion_mnist(real_train):
    te = load_split("fashion_mnist", REAL, "test")
    assert real_train.images.shape == (60000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    for ds in (real_train, te):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert torch.bincount(ds.labels).tolist() == [len(ds) // 10] * 10  # balanced classes
    lim = load_split("fashion_mnist", REAL, "train", train_limit=1000)
    assert len(lim) == 1000 and torch.equal(lim.images, real_train.images[:1000])
    # The hard-coded normalisation stats are those of the data.
    (m,), (s,) = dataset_stats("fashion_mnist")
    x = real_train.images.double()
    assert abs(x.mean().item() - m) < 0.01 and abs(x.std(unbiased=False).item() - s) < 0.01
