"""load_split dispatch, dataset_stats, and the synthetic data set."""

import pytest
import torch

from bagoftricks.data import DATASETS, DEFAULT_ROOTS, DataError, TensorDataset, dataset_stats, load_split, reuse_splits


def test_names_and_roots():
    assert DATASETS == ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
    assert DEFAULT_ROOTS["fashion_mnist"] == "/usr/share/datasets/fashion-mnist"
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*fashion_mnist"):
        load_split("mnist", "", "train")
    with pytest.raises(DataError, match="split"):
        load_split("synthetic", "", "val")
    with pytest.raises(DataError, match="root folder is required"):
        load_split("imagefolder", "", "train")


def test_stats():
    imagenet = ((123.68, 116.779, 103.939), (58.393, 57.12, 57.375))
    assert dataset_stats("imagefolder") == imagenet == dataset_stats("synthetic")
    m, s = dataset_stats("fashion_mnist")
    assert len(m) == len(s) == 1 and 60 < m[0] < 90
    for name in ("cifar10", "cifar100"):
        m, s = dataset_stats(name)
        assert len(m) == 3 and all(100 < v < 135 for v in m) and all(55 < v < 75 for v in s)
    assert dataset_stats("cifar10") != dataset_stats("cifar100")
    assert dataset_stats("synthetic", channels=1) == ((sum(imagenet[0]) / 3,), (sum(imagenet[1]) / 3,))
    assert dataset_stats("fashion_mnist", channels=3)[0] == dataset_stats("fashion_mnist")[0] * 3


def test_synthetic_shapes_and_determinism():
    tr = load_split("synthetic", "", "train", synthetic_samples=200, image_size=12, num_classes=5, in_channels=1,
                    seed=3)
    te = load_split("synthetic", "", "test", synthetic_samples=200, image_size=12, num_classes=5, in_channels=1,
                    seed=3)
    assert isinstance(tr, TensorDataset) and tr.images.shape == (200, 1, 12, 12) and tr.images.dtype == torch.uint8
    assert len(te) == 64  # a quarter of 200 is 50, raised to the minimum of 64
    assert len(load_split("synthetic", "", "test", synthetic_samples=1000)) == 250
    assert torch.bincount(tr.labels).tolist() == [40] * 5 and tr.classes == [f"class_{k}" for k in range(5)]
    again = load_split("synthetic", "", "train", synthetic_samples=200, image_size=12, num_classes=5, in_channels=1,
                       seed=3)
    assert torch.equal(tr.images, again.images) and torch.equal(tr.labels, again.labels)
    other = load_split("synthetic", "", "train", synthetic_samples=200, image_size=12, num_classes=5,
                       in_channels=1, seed=4)
    assert not torch.equal(tr.images, other.images)
    assert not torch.equal(tr.images[:64], te.images)  # test samples are fresh draws
    lim = load_split("synthetic", "", "train", synthetic_samples=200, image_size=12, num_classes=5, in_channels=1,
                     seed=3, train_limit=30)
    assert torch.equal(lim.images, tr.images[:30])


def test_synthetic_is_learnable_and_generalises():
    kw = dict(synthetic_samples=256, image_size=8, num_classes=4, seed=0)
    tr, te = load_split("synthetic", "", "train", **kw), load_split("synthetic", "", "test", **kw)

    def feats(ds):
        return (ds.images.float() - 128) / 64

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(feats(tr)), tr.labels)
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_acc = (model(feats(tr)).argmax(1) == tr.labels).float().mean().item()
        test_acc = (model(feats(te)).argmax(1) == te.labels).float().mean().item()
    assert train_acc > 0.95 and test_acc > 0.9
    # ...and not a lookup table: samples of one class really differ (noise std 24, offsets +-20).
    same_class = tr.images[tr.labels == 0].float()
    assert 20 < same_class.std(0).mean().item() < 40


def test_every_exported_name_resolves():
    import bagoftricks.data as data

    for name in data.__all__:
        assert getattr(data, name) is not None, name


def test_inside_reuse_splits_a_split_is_read_once_for_the_same_arguments():
    kw = dict(image_size=8, num_classes=3, synthetic_samples=12)
    with reuse_splits() as read:
        a = load_split("synthetic", "", "train", **kw)
        assert load_split("synthetic", "", "train", **kw) is a  # the same arguments: the split read before
        assert load_split("synthetic", "", "test", **kw) is not a  # another split, another size: read
        assert load_split("synthetic", "", "train", **dict(kw, image_size=10)).images.shape[-1] == 10
        assert len(read.splits) == 3 and read.seconds > 0
    again = load_split("synthetic", "", "train", **kw)  # after the block: read afresh, the same content
    assert again is not a and torch.equal(again.images, a.images)
