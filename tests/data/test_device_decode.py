"""data.decode: device — image folders decoded in batches on the device, the §2 augmentation applied there.

Everything runs with device "cpu": the same code a GPU runs, but the batched decoder call (exercised directly
below) and the threads that decode on a CPU."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from bagoftricks import recipe, tricks
from bagoftricks.data.device_decode import DeviceDecodeBatches, _decode_cpu
from bagoftricks.data.imagefolder import ImageFolderDataset
from bagoftricks.data.images import decode_rgb
from bagoftricks.data.transforms import BatchAugment, reference_apply
from bagoftricks.engine import setup
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.errors import RecipeError
from bagoftricks.seeds import derive_seed

CPU = torch.device("cpu")
SIZES = [(30, 40), (37, 52), (48, 36), (40, 40), (25, 61), (33, 29)]


def _photo(rng, h, w, c):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 80 * np.sin(xx / 5 + c), 100 + 60 * np.cos(yy / 4), 90 + 2 * xx], -1)
    return (base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 JPEGs of six sizes in two classes, one PNG, one empty file (skipped), and a val split."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 4)):
        for i in range(n):
            d = root / split / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            h, w = SIZES[i % len(SIZES)]
            Image.fromarray(_photo(rng, h, w, i % 2)).save(d / f"{i:03d}.jpg", quality=90)
    Image.fromarray(_photo(rng, 35, 45, 0)).save(root / "train" / "c0" / "zz.png")
    (root / "train" / "c1" / "broken.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def ds(folder):
    return ImageFolderDataset(str(folder), "train")


def _augment(**kw):
    return BatchAugment(16, "paper", **kw)


def test_the_folder_is_listed_as_on_the_other_paths(ds):
    assert len(ds) == 25 and [p.split("/")[-1] for p, _ in ds.skipped] == ["broken.jpg"]


def test_each_image_is_augmented_as_the_per_image_reference_does_it(ds):
    """Given the parameters a batch drew, every image equals reference_apply's (crop, resample, flip, jitter,
    lighting, normalise one after another) up to float rounding; alternating flips mirror the image first."""
    aug = _augment()
    flips = lambda idx, epoch: (idx % 3 == 0) ^ bool(epoch % 2)  # noqa: E731
    src = DeviceDecodeBatches(ds, 8, aug, CPU, seed=3, flips=flips, threads=2)
    for epoch, s in ((0, 0), (1, 2)):
        ids = src.indices(epoch).tolist()[s * 8 : (s + 1) * 8]
        x, y = list(src.epoch(epoch, start_step=s))[0]
        p = src.params(ids, epoch, s)
        for k, i in enumerate(ids):
            img = decode_rgb(ds.paths[i])
            if flips(torch.tensor(i), epoch):
                img = img.flip(-1)
            ref = reference_apply(img, p, 16, index=k, mean=aug.mean, std=aug.std)
            assert torch.allclose(x[k], ref, atol=2e-3), (i, (x[k] - ref).abs().max())
        assert y.tolist() == ds.labels[ids].tolist()


def _areas(crops, sizes):
    h, w = crops[:, 2].double(), crops[:, 3].double()
    return h * w / (sizes[:, 0] * sizes[:, 1]).double(), torch.log(w / h)


def test_parameters_follow_the_per_image_paths_distribution(ds):
    """The batch draws (one generator per step, each image's own size) against the per-image path's (one
    generator per image and epoch): crop area, aspect, position, flip and jitter alike over 2,400 draws."""
    aug = _augment()
    src = DeviceDecodeBatches(ds, 24, aug, CPU, seed=0)
    sizes = src.sizes[:24]
    batch = [src.params(list(range(24)), e, s) for e in range(10) for s in range(10)]
    per_image = [aug.sample_params(1, int(h), int(w), torch.Generator().manual_seed(derive_seed(0, "sample", e, i)))
                 for e in range(100) for i, (h, w) in enumerate(sizes.tolist())]
    cat = lambda ps, k: torch.cat([p[k] for p in ps])  # noqa: E731
    a_area, a_aspect = _areas(cat(batch, "crop"), sizes.repeat(100, 1))
    b_area, b_aspect = _areas(cat(per_image, "crop"), sizes.repeat(100, 1))
    for a, b in ((a_area, b_area), (a_aspect, b_aspect)):
        qa, qb = (torch.quantile(t, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=t.dtype)) for t in (a, b))
        assert (qa - qb).abs().max() < 0.04, (qa, qb)
    rel_top = lambda ps: (cat(ps, "crop")[:, 0] / (sizes.repeat(100, 1)[:, 0] - cat(ps, "crop")[:, 2] + 1))  # noqa: E731
    assert abs(rel_top(batch).double().mean() - rel_top(per_image).double().mean()) < 0.03
    assert abs(cat(batch, "flip").float().mean() - cat(per_image, "flip").float().mean()) < 0.04
    for k in ("brightness", "saturation", "hue"):
        assert abs(cat(batch, k).mean() - cat(per_image, k).mean()) < 0.02
        assert abs(cat(batch, k).std() - cat(per_image, k).std()) < 0.02
    assert abs(cat(batch, "alpha").std() - cat(per_image, "alpha").std()) < 0.01


def test_resumes_mid_epoch_bit_exactly_with_any_number_of_threads(ds):
    a = DeviceDecodeBatches(ds, 6, _augment(), CPU, seed=1, threads=1)
    b = DeviceDecodeBatches(ds, 6, _augment(), CPU, seed=1, threads=3)
    whole = list(a.epoch(2))
    rest = list(b.epoch(2, start_step=2))
    assert len(whole) == 4 and len(rest) == 2
    for (xa, ya), (xb, yb) in zip(whole[2:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(whole[0][0], list(a.epoch(3))[0][0])  # another epoch, other draws


def test_ranks_take_strided_shares(ds):
    two = [DeviceDecodeBatches(ds, 4, _augment(), CPU, seed=0, rank=r, world_size=2) for r in (0, 1)]
    one = DeviceDecodeBatches(ds, 8, _augment(), CPU, seed=0)
    assert two[0].steps_per_epoch == one.steps_per_epoch == 3
    r0, r1, all_ = (t.indices(0).tolist() for t in (*two, one))
    for s in range(3):  # step s of two ranks with batch 4 is step s of one process with batch 8
        assert sorted(r0[4 * s : 4 * s + 4] + r1[4 * s : 4 * s + 4]) == sorted(all_[8 * s : 8 * s + 8])


def test_the_batched_decoder_call_and_its_fallbacks(ds, monkeypatch):
    """What a GPU runs (one decode_jpeg call for the batch's JPEGs), run with device "cpu": the same pixels as
    the CPU's decoder; the PNG is decoded on the CPU and counted; a batch the decoder refuses goes image by image."""
    src = DeviceDecodeBatches(ds, 5, _augment(), CPU, seed=0)
    png = next(i for i, p in enumerate(ds.paths) if p.endswith(".png"))
    ids = [0, png, 3, 7, 11]
    files = [open(ds.paths[i], "rb").read() for i in ids]
    images = src._decode_device(ids, files)
    assert src.cpu_decoded == 1
    for i, f, im in zip(ids, files, images):
        assert torch.equal(im, _decode_cpu(ds.paths[i], f)) and torch.equal(im, decode_rgb(ds.paths[i]))
    import torchvision.io

    real = torchvision.io.decode_jpeg
    monkeypatch.setattr(torchvision.io, "decode_jpeg",
                        lambda d, **k: (_ for _ in ()).throw(RuntimeError("batch refused")) if isinstance(d, list)
                        else real(d, **k))
    again = src._decode_device(ids, files)
    assert all(torch.equal(a, b) for a, b in zip(images, again))


def _recipe(folder, *extra):
    return recipe.validate(recipe.apply_overrides(recipe.Recipe(), [
        "data.name=imagefolder", f"data.root={folder}", "data.image_size=16", "train.batch_size=8",
        "train.device=cpu", "model.arch=resnet8", "model.width=4", *extra]))


def test_the_recipe_switches_it_on(folder):
    data = setup.build_data(_recipe(folder, "data.decode=device"), CPU, DistInfo())
    assert type(data.train).__name__ == "DeviceDecodeBatches" and not data.in_memory
    assert [s for s, _, _ in data.skipped] == ["train"]
    auto = setup.build_data(_recipe(folder), CPU, DistInfo())  # auto on a CPU: the folder fits, in memory
    assert type(auto.train).__name__ == "MemoryBatches"
    never = setup.build_data(_recipe(folder, "data.in_memory=never", "data.workers=0"), CPU, DistInfo())
    assert type(never.train).__name__ == "LoaderBatches"  # auto on a CPU: the DataLoader path, as before


def test_alternating_flips_reach_it(folder):
    r = _recipe(folder, "data.decode=device", "data.flip_mode=alternate")
    src = setup.build_data(r, CPU, DistInfo()).train
    bits = tricks.flip_bits(len(src.ds), r.data.flip, r.train.seed)
    assert src.flips is not None and src.augment.flip == 0.0
    assert torch.equal(src.flips(torch.arange(4), 0), functools.partial(tricks.epoch_flips, bits)(torch.arange(4), 0))


@pytest.mark.parametrize("extra, words", [
    (("data.name=fashion_mnist",), "data.decode: decodes the files of an image folder"),
    (("data.augment=small",), "needs data.augment: paper"),
    (("data.in_memory=always",), "data.in_memory is 'always'"),
])
def test_what_it_refuses_names_the_field(extra, words):
    r = recipe.apply_overrides(recipe.Recipe(), ["data.decode=device", *extra])
    with pytest.raises(RecipeError, match=words):
        recipe.validate(r)


def test_randaugment_is_refused_on_the_device_by_the_recipe(folder):
    # refused before anything loads (bagoftricks show says so too), naming the field the user set
    with pytest.raises(RecipeError, match="data.decode: augments whole batches .*randaugment_ops runs per image"):
        _recipe(folder, "data.decode=device", "tricks.randaugment_ops=2")
    r = recipe.apply_overrides(_recipe(folder, "data.decode=device"), ["tricks.randaugment_ops=2"])
    with pytest.raises(RecipeError, match=r"tricks.randaugment_ops: runs per image on the host.*got 2"):
        recipe.validate(r, {"tricks.randaugment_ops"})
