"""Batch sources: determinism, bit-exact resume, sharding across ranks, eval coverage."""

import time

import pytest
import torch
from torch.utils.data import Dataset

from bagoftricks.data import BatchAugment, LoaderBatches, MemoryBatches, TensorDataset, eval_batches
from bagoftricks.data.batches import DataTimeoutError

N = 103


@pytest.fixture(scope="module")
def ds():
    g = torch.Generator().manual_seed(0)
    # label == index, so a batch's labels say exactly which samples it holds
    return TensorDataset(torch.randint(0, 256, (N, 3, 12, 12), generator=g, dtype=torch.uint8), torch.arange(N),
                         [str(i) for i in range(N)])


def collect(it):
    return [(x.clone(), y.clone()) for x, y in it]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


AUG = BatchAugment(10, "paper")


def test_memory_deterministic_and_epochs_differ(ds):
    a = MemoryBatches(ds, 8, AUG, "cpu", seed=1)
    b = MemoryBatches(ds, 8, AUG, "cpu", seed=1)
    assert a.steps_per_epoch == N // 8 == len(a)
    e0, e1 = collect(a.epoch(0)), collect(a.epoch(1))
    assert same(e0, collect(b.epoch(0))) and same(e1, collect(b.epoch(1)))
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1]))  # new order
    c = collect(MemoryBatches(ds, 8, AUG, "cpu", seed=2).epoch(0))
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in c]))
    x, y = e0[0]
    assert x.shape == (8, 3, 10, 10) and x.dtype == torch.float32 and y.dtype == torch.int64
    ys = torch.cat([y for _, y in e0])
    assert len(set(ys.tolist())) == len(ys) == 12 * 8  # no sample twice in an epoch


def test_memory_resume_is_bitwise(ds):
    mb = MemoryBatches(ds, 8, AUG, "cpu", seed=3)
    full = collect(mb.epoch(4))
    assert same(full[5:], collect(mb.epoch(4, start_step=5)))
    assert collect(mb.epoch(4, start_step=mb.steps_per_epoch)) == []
    # The augmentation of a step does not depend on the steps before it in this process either.
    assert same(full[5:6], collect(MemoryBatches(ds, 8, AUG, "cpu", seed=3).epoch(4, start_step=5))[:1])


def test_augment_stream_depends_on_epoch_step_and_rank(ds):
    def aug(x, g):  # records the first random number of the generator it is handed
        return torch.full((len(x), 1), torch.rand(1, generator=g).item())

    draws = {}
    for rank in range(2):
        mb = MemoryBatches(ds, 8, aug, "cpu", seed=0, rank=rank, world_size=2)
        for e in range(2):
            for s, (x, _) in enumerate(mb.epoch(e)):
                draws[(rank, e, s)] = x[0, 0].item()
    assert len(set(draws.values())) == len(draws) == 2 * 2 * 6


def test_memory_images_match_labels_without_augment(ds):
    mb = MemoryBatches(ds, 10, None, "cpu", seed=0, drop_last=False)
    batches = collect(mb.epoch(0))
    assert mb.steps_per_epoch == 11 and [len(y) for _, y in batches] == [10] * 10 + [3]
    for x, y in batches:
        assert torch.equal(x, ds.images[y].float())
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(N))


def test_two_ranks_disjoint_equal_steps(ds):
    r0 = MemoryBatches(ds, 8, AUG, "cpu", seed=5, rank=0, world_size=2)
    r1 = MemoryBatches(ds, 8, AUG, "cpu", seed=5, rank=1, world_size=2)
    assert r0.steps_per_epoch == r1.steps_per_epoch == (N // 2) // 8
    y0 = torch.cat([y for _, y in r0.epoch(2)])
    y1 = torch.cat([y for _, y in r1.epoch(2)])
    assert len(y0) == len(y1) == r0.steps_per_epoch * 8
    assert not set(y0.tolist()) & set(y1.tolist())
    # The shards come from one shared epoch order, strided: together they are its first 2 * 51 entries,
    # and step s of the two ranks holds exactly the images of step s of one process with batch 16.
    one = MemoryBatches(ds, 1, None, "cpu", seed=5)
    order = torch.cat([y for _, y in one.epoch(2)])
    assert torch.equal(r0.indices(2), order[0:102:2]) and torch.equal(r1.indices(2), order[1:102:2])
    both = MemoryBatches(ds, 16, None, "cpu", seed=5)
    for (_, a), (_, b), (_, ab) in zip(r0.epoch(2), r1.epoch(2), both.epoch(2)):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(ab.tolist())


def test_loader_matches_memory_order_and_resumes(ds):
    lb = LoaderBatches(ds, 8, AUG.per_image, "cpu", seed=1, workers=0)
    mb = MemoryBatches(ds, 8, AUG, "cpu", seed=1)
    full = collect(lb.epoch(3))
    assert lb.steps_per_epoch == mb.steps_per_epoch == len(full)
    assert torch.equal(torch.cat([y for _, y in full]), torch.cat([y for _, y in mb.epoch(3)]))
    assert same(full[4:], collect(lb.epoch(3, start_step=4)))
    assert not same(full, collect(lb.epoch(4)))


def test_loader_per_sample_seed_contract(ds):
    """Sample i of epoch e is augmented with a generator seeded by derive_seed(seed, "sample", e, i)."""
    from bagoftricks.seeds import derive_seed

    lb = LoaderBatches(ds, 8, AUG.per_image, "cpu", seed=9, workers=0)
    seen = {}
    for e in (0, 1):
        x, y = next(iter(lb.epoch(e)))
        for xi, i in zip(x, y.tolist()):
            g = torch.Generator().manual_seed(derive_seed(9, "sample", e, i))
            assert torch.equal(xi, AUG.per_image(ds.images[i], generator=g))
        seen[e] = dict(zip(y.tolist(), x))
    x0, _ = next(iter(lb.epoch(0)))
    assert torch.equal(x0, torch.stack(list(seen[0].values())))
    # The same image is augmented differently in another epoch.
    i = next(iter(seen[0]))
    other = AUG.per_image(ds.images[i], generator=torch.Generator().manual_seed(derive_seed(9, "sample", 1, i)))
    assert not torch.equal(seen[0][i], other)


def test_loader_workers_do_not_change_batches(ds):
    """Per-sample seeds: the same batches whichever worker decodes which image, and across epochs with
    persistent workers."""
    inline = LoaderBatches(ds, 8, AUG.per_image, "cpu", seed=1, workers=0, world_size=2, rank=1)
    pooled = LoaderBatches(ds, 8, AUG.per_image, "cpu", seed=1, workers=2, world_size=2, rank=1, timeout=60)
    try:
        for e in (0, 1):
            assert same(collect(inline.epoch(e)), collect(pooled.epoch(e)))
        assert same(collect(inline.epoch(1, start_step=2)), collect(pooled.epoch(1, start_step=2)))
    finally:
        pooled.close()


class _Slow(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        time.sleep(1.0)
        return torch.zeros(3, 4, 4, dtype=torch.uint8), 0


def test_loader_timeout_is_a_clear_error():
    lb = LoaderBatches(_Slow(), 1, None, "cpu", seed=0, workers=1, timeout=0.3)
    t = time.monotonic()
    with pytest.raises(DataTimeoutError, match=r"within 0.3 s \(epoch 0, step 0"):
        next(iter(lb.epoch(0)))
    assert time.monotonic() - t < 5  # failed instead of hanging (and the worker was stopped)


class _PerImage(Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds.images[i], int(self.ds.labels[i])


@pytest.mark.parametrize("kind", ["tensor", "per_image"])
def test_eval_batches_cover_every_index_once_in_order(ds, kind):
    src = ds if kind == "tensor" else _PerImage(ds)
    ys, xs = [], []
    for rank in range(2):
        for x, y in eval_batches(src, 8, lambda im: im.float() * 2, "cpu", rank=rank, world_size=2, workers=0):
            xs.append(x)
            ys.append(y)
    assert torch.equal(torch.cat(ys), torch.arange(N))  # every index exactly once, in order, no padding
    assert torch.equal(torch.cat(xs), ds.images.float() * 2)
    r0 = list(eval_batches(src, 8, None, "cpu", rank=0, world_size=3, workers=0))
    assert sum(len(y) for _, y in r0) == N // 3


def test_bad_arguments(ds):
    with pytest.raises(ValueError, match="rank"):
        MemoryBatches(ds, 8, None, "cpu", seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        MemoryBatches(ds, 200, None, "cpu", seed=0)
    with pytest.raises(ValueError, match="start_step"):
        next(MemoryBatches(ds, 8, None, "cpu", seed=0).epoch(0, start_step=-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_memory_on_cuda_resumes_bitwise(ds):
    mb = MemoryBatches(ds, 8, AUG, "cuda", seed=3)
    full = collect(mb.epoch(1))
    assert full[0][0].device.type == "cuda"
    assert same(full[3:], collect(mb.epoch(1, start_step=3)))
    lb = LoaderBatches(ds, 8, AUG.per_image, "cuda", seed=1, workers=0)
    x, y = next(iter(lb.epoch(0)))
    assert x.device.type == "cuda" and y.device.type == "cuda"
