"""data.class_subset: only the kept classes, relabelled in the order given, for both kinds of split."""
import numpy as np
import pytest
import torch
from PIL import Image

from bagoftricks.data import DataError, ImageFolderDataset, TensorDataset, select_classes


def test_tensor_split():
    labels = torch.tensor([0, 1, 2, 3, 2, 1, 0, 3])
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    ds = TensorDataset(images, labels, ["a", "b", "c", "d"])
    sub = select_classes(ds, [3, 1])
    assert sub.classes == ["d", "b"]
    assert sub.labels.tolist() == [1, 0, 1, 0]  # b, d, b, d relabelled: d -> 0, b -> 1
    assert sub.images[:, 0, 0, 0].tolist() == [1, 3, 5, 7]
    with pytest.raises(DataError, match=r"data.class_subset: \[4\] not in 0..3"):
        select_classes(ds, [0, 4])
    # an in-memory image folder keeps each image's own size beside it
    sized = TensorDataset(images, labels, ["a", "b", "c", "d"], sizes=torch.arange(16).view(8, 2))
    assert select_classes(sized, [3, 1]).sizes.tolist() == [[2, 3], [6, 7], [10, 11], [14, 15]]
    assert sub.sizes is None


def test_image_folder_split(tmp_path):
    for c in ("cat", "dog", "emu"):
        for i in range(2):
            d = tmp_path / "train" / c
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(d / f"{i}.png")
    ds = ImageFolderDataset(str(tmp_path), "train")
    sub = select_classes(ds, [2, 0])
    assert sub.classes == ["emu", "cat"] and sub.labels.tolist() == [1, 1, 0, 0]
    assert [p.split("/")[-2] for p in sub.paths] == ["cat", "cat", "emu", "emu"] and len(sub.sizes) == 4
    assert len(ds) == 6  # the original is untouched


def test_holdout_evaluates_on_the_last_training_images_never_trained_on():
    from bagoftricks import recipe
    from bagoftricks.engine.distributed import DistInfo
    from bagoftricks.engine.setup import build_data
    base = ["data.name=synthetic", "data.image_size=8", "data.synthetic_samples=40", "data.augment=none",
            "model.arch=resnet8", "train.batch_size=8"]
    r = recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*base, "data.holdout=10", "data.train_limit=20"]))
    full = recipe.validate(recipe.apply_overrides(recipe.Recipe(), base))
    cpu = torch.device("cpu")
    d, f = build_data(r, cpu, DistInfo()), build_data(full, cpu, DistInfo())
    train_all = f.train.ds.images
    assert torch.equal(d.test.images, train_all[-10:]) and torch.equal(d.train.ds.images, train_all[:20])
