"""The embedded Fashion-MNIST scenes: deterministic, targets that match the visible pixels, splits apart."""
import numpy as np
import torch

from bagoftricks.data.catalog import DEFAULT_ROOTS
from bagoftricks.transfer import scenes
from bagoftricks.transfer.scenes import CLASSES, MIN_VISIBLE, load_scenes, make_scene

ROOT = DEFAULT_ROOTS["fashion_mnist"]


def test_same_scenes_every_time_and_scene_i_independent_of_count():
    a, b = load_scenes(ROOT, "test", 5, 48), load_scenes(ROOT, "test", 3, 48)
    for i in range(3):
        assert torch.equal(a.images[i], b.images[i])
        assert torch.equal(a.targets[i]["boxes"], b.targets[i]["boxes"])
        assert torch.equal(a.targets[i]["mask"], b.targets[i]["mask"])
    assert a.classes == CLASSES and a.classes[0] == "background" and len(a.classes) == 11


def test_canvas_size_and_types():
    s = load_scenes(ROOT, "train", 4, 40)
    for img, t in zip(s.images, s.targets):
        assert img.shape == (1, 40, 40) and img.dtype == torch.uint8
        assert t["mask"].shape == (40, 40) and t["mask"].dtype == torch.uint8
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert 1 <= len(t["labels"]) <= scenes.MAX_OBJECTS


def test_boxes_are_tight_around_visible_pixels_of_their_class():
    s = load_scenes(ROOT, "train", 20, 64)
    for img, t in zip(s.images, s.targets):
        mask = t["mask"]
        for (x1, y1, x2, y2), k in zip(t["boxes"].long().tolist(), t["labels"].tolist()):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inside = mask[y1:y2, x1:x2] == k
            # tight: each of the four edges of the box touches a pixel of its class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert inside.sum() >= MIN_VISIBLE
        # label-map pixels are garment pixels: bright in the image; the background is black
        assert (img[0][mask == 0] == 0).all()
        assert (img[0][mask > 0] > 0).all()


def test_later_garment_covers_earlier_one():
    rng_images = np.zeros((2, 28, 28), np.uint8)
    rng_images[:, 4:24, 4:24] = 200           # two solid squares: the second covers the first where they meet
    labels = np.array([0, 1])

    class Fixed:  # first garment index 0 at (0, 0) side 20; second index 1 at (10, 10) side 20
        def __init__(self):
            self.calls = iter([2, 0, 20, np.array([0, 0]), 1, 20, np.array([10, 10])])

        def integers(self, *a, **k):
            return next(self.calls)

    img, t = make_scene(rng_images, labels, 40, Fixed())
    assert t["labels"].tolist() == [1, 2]
    first, second = t["boxes"].tolist()
    assert second == [13.0, 13.0, 27.0, 27.0]       # fully visible: its own square (pixels 3..16 of 20, +10)
    assert t["mask"][15, 15] == 2 and t["mask"][4, 4] == 1
    assert first == [3.0, 3.0, 17.0, 17.0]            # its visible pixels still span its square


def test_train_and_test_scenes_come_from_their_own_split():
    tr, te = load_scenes(ROOT, "train", 3, 48), load_scenes(ROOT, "test", 3, 48)
    assert not torch.equal(tr.images[0], te.images[0])
    g_train, _ = scenes._garments(ROOT, "train")
    g_test, _ = scenes._garments(ROOT, "test")
    assert len(g_train) == 60000 and len(g_test) == 10000


def test_a_budget_s_two_builds_read_the_scenes_once():
    from bagoftricks.data import reuse_splits
    from bagoftricks.transfer.data import load_transfer_splits
    from tests.transfer.conftest import tiny
    r = tiny()
    with reuse_splits() as read:
        train, test = load_transfer_splits(r)
        again = load_transfer_splits(r)
        assert again[0] is train and again[1] is test  # read once
        assert len(load_transfer_splits(tiny("transfer.train_scenes=6"))[0]) == 6  # what it reads is in the key
        assert len(read.splits) == 3
    assert load_transfer_splits(r)[0] is not train  # after the block: read again
