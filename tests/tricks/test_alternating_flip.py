import torch

from bagoftricks.data.batches import LoaderBatches, MemoryBatches
from bagoftricks.data.common import TensorDataset
from bagoftricks.tricks.alternating_flip import epoch_flips, flip_bits, flip_where


def test_bits_are_seeded_and_have_the_probability():
    a, b = flip_bits(4000, 0.5, 3), flip_bits(4000, 0.5, 3)
    assert torch.equal(a, b) and not torch.equal(a, flip_bits(4000, 0.5, 4))
    assert 0.45 < a.float().mean().item() < 0.55
    assert not flip_bits(10, 0.0, 0).any() and flip_bits(10, 1.0, 0).all()


def test_consecutive_epochs_show_both_orientations():
    bits = flip_bits(100, 0.5, 0)
    idx = torch.arange(100)
    e0, e1, e2 = (epoch_flips(bits, idx, e) for e in range(3))
    assert torch.equal(e0, bits) and torch.equal(e1, ~e0) and torch.equal(e2, e0)


def test_flip_where_mirrors_only_the_masked_images():
    x = torch.arange(2 * 1 * 2 * 3).view(2, 1, 2, 3)
    y = flip_where(x, torch.tensor([True, False]))
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])


def _ds(n=8):
    images = torch.arange(n * 4 * 4, dtype=torch.uint8).view(n, 1, 4, 4) * 3
    return TensorDataset(images, torch.arange(n), [str(i) for i in range(n)])


def test_both_data_paths_apply_the_same_flips():
    ds, bits = _ds(), flip_bits(8, 0.5, 1)
    flips = lambda idx, e: epoch_flips(bits, idx, e)  # noqa: E731
    mem = MemoryBatches(ds, 4, None, "cpu", seed=0, flips=flips)
    per = LoaderBatches(ds, 4, None, "cpu", seed=0, workers=0, flips=flips)
    for epoch in (0, 1):
        for (xm, ym), (xp, yp) in zip(mem.epoch(epoch), per.epoch(epoch)):
            assert torch.equal(xm, xp) and torch.equal(ym, yp)
            for img, label in zip(xm, ym):
                want = ds.images[label].float()
                flipped = bool(bits[label]) ^ (epoch == 1)
                assert torch.equal(img, want.flip(-1) if flipped else want)
