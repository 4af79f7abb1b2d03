"""ImageFolder: formats and modes converted to RGB, bad files found at construction."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, features

from bagoftricks.data import DataError, ImageFolderDataset, LoaderBatches, TensorDataset, load_split
from bagoftricks.data.images import decode_rgb
from bagoftricks.data.transforms import BatchAugment

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _img(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(h + w - 2, 1)], -1)
    return Image.fromarray(np.clip(base + rng.integers(-10, 10, (h, w, 3)), 0, 255).astype(np.uint8))


def _jpeg_bytes(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90, **kw)
    return b.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    cat.mkdir(parents=True)
    (dog / "nested").mkdir(parents=True)
    good = {
        cat / "a_rgb.png": (_img(20, 30, 0), "PNG"),
        cat / "b_rgb.jpg": (_img(24, 16, 1), "JPEG"),
        cat / "c_rgba.png": (_img(12, 12, 2).convert("RGBA"), "PNG"),
        cat / "d_palette.png": (_img(10, 14, 3).convert("P"), "PNG"),
        cat / "e_gray.jpg": (_img(9, 11, 4).convert("L"), "JPEG"),
        cat / "f_cmyk.jpg": (_img(8, 8, 5).convert("CMYK"), "JPEG"),
        cat / "g.bmp": (_img(7, 9, 6), "BMP"),
        cat / "h.gif": (_img(6, 6, 7).convert("P"), "GIF"),
        dog / "nested" / "i.JPEG": (_img(16, 20, 8), "JPEG"),  # found recursively, extension case-insensitive
    }
    if features.check("webp"):
        good[dog / "j.webp"] = (_img(10, 10, 9), "WEBP")
    for p, (im, fmt) in good.items():
        im.save(p, fmt)
    bad = [dog / "zero.jpg", dog / "trunc.jpg", dog / "text.jpg"]
    bad[0].write_bytes(b"")
    full = _jpeg_bytes(_img(64, 64, 10))
    bad[1].write_bytes(full[: len(full) // 2])
    bad[2].write_text("this is not an image\n")
    (dog / "notes.txt").write_text("ignored: not an image extension")
    (root / "val" / "cat").mkdir(parents=True)
    (root / "val" / "dog").mkdir(parents=True)
    _img(5, 5, 11).save(root / "val" / "dog" / "v.png")
    return root, good, bad


def test_default_skips_exactly_the_bad_files(folder):
    root, good, bad = folder
    ds = ImageFolderDataset(str(root), "train")
    assert ds.classes == ["cat", "dog"]
    assert sorted(p for p, _ in ds.skipped) == sorted(str(p) for p in bad)
    assert all(reason for _, reason in ds.skipped)
    assert dict(ds.skipped)[str(bad[0])].startswith("empty file")
    assert "truncated" in dict(ds.skipped)[str(bad[1])]
    assert sorted(ds.paths) == sorted(str(p) for p in good) and len(ds) == len(good)
    assert ds.labels.dtype == torch.int64
    for i, p in enumerate(ds.paths):
        x, y = ds[i]
        ref = np.asarray(Image.open(p).convert("RGB"))
        assert x.dtype == torch.uint8 and x.shape == (3, *ref.shape[:2]) == (3, *ds.sizes[i])
        assert y == (0 if "/cat/" in p else 1) == int(ds.labels[i])
        # torchvision's decoders (JPEG/PNG/GIF/WebP) and PIL (BMP) agree with PIL's RGB conversion.
        diff = np.abs(x.permute(1, 2, 0).numpy().astype(int) - ref.astype(int)).max()
        assert diff <= (2 if p.lower().endswith((".jpg", ".jpeg")) else 0), p


def test_strict_names_the_offending_path(folder):
    root, _, bad = folder
    with pytest.raises(DataError) as e:
        ImageFolderDataset(str(root), "train", strict=True)
    assert any(str(p) in str(e.value) for p in bad)
    with pytest.raises(DataError, match="text.jpg"):
        load_split("imagefolder", str(root), "train", strict=True)


def test_jpeg_missing_only_its_end_is_caught(tmp_path):
    d = tmp_path / "train" / "a"
    d.mkdir(parents=True)
    full = _jpeg_bytes(_img(64, 64, 0))
    (d / "cut.jpg").write_bytes(full[:-40])
    (d / "ok.jpg").write_bytes(full)
    ds = ImageFolderDataset(str(tmp_path), "train")
    assert [p for p, _ in ds.skipped] == [str(d / "cut.jpg")] and len(ds) == 1


def test_val_split_shares_train_classes_and_falls_back_to_test(folder):
    root, _, _ = folder
    val = ImageFolderDataset(str(root), "test")
    assert val.classes == ["cat", "dog"] and val.labels.tolist() == [1]  # 'dog' keeps train's index
    (root / "val").rename(root / "test")
    assert ImageFolderDataset(str(root), "test").labels.tolist() == [1]
    (root / "test" / "bird").mkdir()
    with pytest.raises(DataError, match="bird"):
        ImageFolderDataset(str(root), "test")


def test_empty_structures_are_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(str(tmp_path / "nope"), "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderDataset(str(tmp_path), "train")
    (tmp_path / "train" / "a").mkdir()
    (tmp_path / "train" / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        ImageFolderDataset(str(tmp_path), "train")
    with pytest.raises(DataError, match="val or .*test"):
        ImageFolderDataset(str(tmp_path), "test")


def test_load_split_memory_or_per_image(folder):
    root, good, bad = folder
    mem = load_split("imagefolder", str(root), "train", image_size=28)
    assert isinstance(mem, TensorDataset)
    assert mem.images.shape == (len(good), 3, 32, 32)  # round(28 / 0.875) = 32, square
    assert len(mem.skipped) == 3 and mem.classes == ["cat", "dog"]
    per = load_split("imagefolder", str(root), "train", memory_limit_bytes=0)
    assert isinstance(per, ImageFolderDataset) and torch.equal(per.labels, mem.labels)
    # A folder whose images share one size is kept at that size, pixel for pixel.
    val = load_split("imagefolder", str(root), "test", image_size=224)
    assert val.images.shape == (1, 3, 5, 5)
    assert torch.equal(val.images[0], torch.from_numpy(np.array(Image.open(root / "val/dog/v.png"))).permute(2, 0, 1))


def test_training_split_in_memory_keeps_every_whole_image(folder):
    """With whole_images (the §2 crop), an in-memory split holds each image whole, aspect kept, in the
    top-left of the canvas with its size; without, the centre square (the evaluation framing)."""
    root, good, _ = folder
    mem = load_split("imagefolder", str(root), "train", image_size=28, whole_images=True)
    ds = ImageFolderDataset(str(root), "train")
    assert mem.images.shape == (len(good), 3, 32, 32) and mem.sizes.shape == (len(good), 2)
    for i, (h0, w0) in enumerate(ds.sizes):
        h, w = (int(v) for v in mem.sizes[i])
        assert max(h, w) == 32 and abs(h / w - h0 / w0) < 0.1, (ds.paths[i], h0, w0, h, w)
        whole = torch.nn.functional.interpolate(decode_rgb(ds.paths[i])[None].float(), size=(h, w), mode="bilinear",
                                                align_corners=False, antialias=True)[0]
        assert (mem.images[i, :, :h, :w].float() - whole).abs().max() <= 1.0   # the whole image, edges included
        assert int(mem.images[i, :, h:, :].sum()) == 0 and int(mem.images[i, :, :, w:].sum()) == 0
    assert load_split("imagefolder", str(root), "train", image_size=28).sizes is None
    assert load_split("imagefolder", str(root), "test", image_size=224, whole_images=True).sizes is None


def test_alternating_flip_mirrors_each_whole_image_within_its_own_width():
    from bagoftricks.data.batches import _flip_where
    x = torch.zeros(2, 1, 2, 5, dtype=torch.uint8)
    x[0, 0, :, :3] = torch.tensor([1, 2, 3], dtype=torch.uint8)   # a 3-px wide image in a 5-px canvas
    x[1, 0, :, :5] = torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint8)
    out = _flip_where(x, torch.tensor([True, True]), torch.tensor([3, 5]))
    assert out[0, 0, 0].tolist() == [3, 2, 1, 0, 0] and out[1, 0, 0].tolist() == [5, 4, 3, 2, 1]
    assert torch.equal(_flip_where(x, torch.tensor([False, False]), torch.tensor([3, 5])), x)


def test_train_limit_is_a_seeded_subset_across_classes(folder):
    root, _, _ = folder
    a = ImageFolderDataset(str(root), "train", limit=6, seed=1)
    b = ImageFolderDataset(str(root), "train", limit=6, seed=1)
    assert a.paths == b.paths and len(a) + len(a.skipped) == 6
    assert a.paths == sorted(a.paths, key=ImageFolderDataset(str(root), "train").paths.index)


def test_per_image_training_path(folder):
    root, _, _ = folder
    ds = ImageFolderDataset(str(root), "train")
    aug = BatchAugment(16, "paper")
    lb = LoaderBatches(ds, 4, aug.per_image, "cpu", seed=3, workers=0)
    (x, y), *_ = list(lb.epoch(0))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    x2, _ = next(iter(lb.epoch(0)))
    assert torch.equal(x, x2)
