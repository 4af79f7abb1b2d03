"""CIFAR-10/100 pickle batches: layout, pixel order, and every kind of damage."""

import os
import pickle

import numpy as np
import pytest
import torch

from bagoftricks.data import DataError, load_split


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root, per_batch=4, test_n=3, bytes_keys=False):
    """Tiny fake cifar-10-batches-py; pixel values encode (image, offset) so the layout can be checked."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    batches = {}
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        dump(d / f"data_batch_{i}", {k("data"): data, k("labels"): labels, k("batch_label"): f"b{i}"})
        batches[f"data_batch_{i}"] = (data, labels)
    data = rng.integers(0, 256, (test_n, 3072), dtype=np.uint8)
    dump(d / "test_batch", {k("data"): data, k("labels"): [9, 0, 5][:test_n]})
    batches["test_batch"] = (data, [9, 0, 5][:test_n])
    dump(d / "batches.meta", {k("label_names"): [f"c{j}" for j in range(10)]})
    return d, batches


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_layout(tmp_path, bytes_keys):
    d, batches = make_cifar10(tmp_path, bytes_keys=bytes_keys)
    tr = load_split("cifar10", str(tmp_path), "train")
    assert tr.images.shape == (20, 3, 32, 32) and tr.images.dtype == torch.uint8 and tr.images.is_contiguous()
    data1, labels1 = batches["data_batch_1"]
    data2, _ = batches["data_batch_2"]
    # Row layout: 1024 R, then 1024 G, then 1024 B, each row-major 32x32.
    assert tr.images[0, 0, 0, 0] == data1[0, 0] and tr.images[0, 0, 0, 1] == data1[0, 1]
    assert tr.images[0, 0, 1, 0] == data1[0, 32] and tr.images[0, 1, 0, 0] == data1[0, 1024]
    assert tr.images[0, 2, 31, 31] == data1[0, 3071]
    assert torch.equal(tr.images[4].reshape(-1), torch.from_numpy(data2[0]))  # batches concatenated in order
    assert tr.labels[:4].tolist() == labels1
    assert tr.classes == [f"c{j}" for j in range(10)]
    te = load_split("cifar10", str(d), "test")  # root may also be the extracted folder itself
    assert te.labels.tolist() == [9, 0, 5] and len(te) == 3


def test_cifar10_train_limit_is_a_prefix(tmp_path):
    make_cifar10(tmp_path)
    full = load_split("cifar10", str(tmp_path), "train")
    lim = load_split("cifar10", str(tmp_path), "train", train_limit=6)
    assert len(lim) == 6 and torch.equal(lim.images, full.images[:6]) and torch.equal(lim.labels, full.labels[:6])


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    dump(d / "train", {"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "fine_labels": [0, 99, 5, 6, 7],
                       "coarse_labels": [0, 19, 1, 1, 1]})
    dump(d / "test", {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "fine_labels": [3, 4],
                      "coarse_labels": [0, 0]})
    dump(d / "meta", {"fine_label_names": [f"f{j}" for j in range(100)], "coarse_label_names": ["x"] * 20})
    tr = load_split("cifar100", str(tmp_path), "train")
    assert tr.labels.tolist() == [0, 99, 5, 6, 7] and tr.classes[99] == "f99" and len(tr.classes) == 100
    assert load_split("cifar100", str(tmp_path), "test").images.shape == (2, 3, 32, 32)


def test_truncated_pickle(tmp_path):
    d, _ = make_cifar10(tmp_path)
    p = d / "data_batch_3"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        load_split("cifar10", str(tmp_path), "train")
    msg = str(e.value)
    assert str(p) in msg
    assert "expected at least 30720000 bytes" in msg and f"got {len(raw) // 2}" in msg


def test_data_size_mismatch(tmp_path):
    d, _ = make_cifar10(tmp_path)
    dump(d / "test_batch", {"data": np.zeros((3, 3000), np.uint8), "labels": [1, 2, 3]})
    with pytest.raises(DataError) as e:
        load_split("cifar10", str(tmp_path), "test")
    msg = str(e.value)
    assert "test_batch" in msg and "expected 9216 bytes" in msg and "got 9000" in msg


def test_label_count_mismatch(tmp_path):
    d, _ = make_cifar10(tmp_path)
    dump(d / "test_batch", {"data": np.zeros((3, 3072), np.uint8), "labels": [1, 2]})
    with pytest.raises(DataError) as e:
        load_split("cifar10", str(tmp_path), "test")
    assert "test_batch" in str(e.value) and "expected 6144 bytes" in str(e.value) and "got 9216" in str(e.value)


class _Evil:
    def __reduce__(self):
        return (os.remove, ("/nonexistent/never-called",))


def test_pickle_cannot_run_code(tmp_path):
    d, _ = make_cifar10(tmp_path)
    dump(d / "test_batch", {"data": _Evil(), "labels": [1]})
    with pytest.raises(DataError, match="refusing to load global posix.remove"):
        load_split("cifar10", str(tmp_path), "test")


def test_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="bagoftricks download cifar100"):
        load_split("cifar100", str(tmp_path), "train")
