"""Batch sources: the engine's only view of the data.

Two interchangeable training sources, both with ``steps_per_epoch`` and ``epoch(e, start_step=0)``
yielding ``(x float [B, C, S, S], y int64 [B])`` on the target device:

* ``MemoryBatches`` — a TensorDataset held on the device as uint8, augmented a whole batch at a time
  there by a ``BatchAugment``.
* ``LoaderBatches`` — any per-image Dataset through DataLoader workers (pinned memory, prefetching,
  non-blocking copies), transformed one image at a time.

Determinism (what makes bit-exact resume possible):

* the order of epoch e is ``randperm`` from a CPU generator seeded with derive_seed(seed, "order", e);
* rank r of W takes positions r, r + W, r + 2W, ... of it, m = N // W of them (``shard``): equal shards,
  so every rank runs the same number of steps (the N mod W samples at the end of the order, different
  each epoch, are dropped), and step s of W ranks with batch b covers the images of step s of one
  process with batch W·b;
* memory path: the augmentation of step s is drawn from a generator on the device seeded with
  derive_seed(seed, "augment", e, s, r); per-image path: sample i of epoch e uses a CPU generator seeded
  with derive_seed(seed, "sample", e, i), whichever worker decodes it.

So ``epoch(e, start_step=k)`` yields exactly batches k, k+1, ... of ``epoch(e)``, and the per-image
path gives the same batches with any number of workers.

``flips`` (optional, both sources): ``flips(index, epoch) -> bool`` per sample, a deterministic
horizontal flip applied to the stored image before the augmentation (alternating flips,
``tricks.alternating_flip``); the augmentation's own random flip is then off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bagoftricks.seeds import derive_seed

from .common import TensorDataset


class DataTimeoutError(RuntimeError):
    """A DataLoader worker produced no batch within ``timeout`` seconds."""


def _worker_batches(it: Iterator, timed_out: Callable[[], DataTimeoutError]) -> Iterator:
    """The batches of a DataLoader iterator until it ends; the RuntimeError a DataLoader raises when its
    workers miss the ``timeout`` becomes the DataTimeoutError that ``timed_out()`` returns (chained to it)."""
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError as e:
            if "timed out" in str(e):
                raise timed_out() from e
            raise
        yield batch


def epoch_order(n: int, seed: int, epoch: int, purpose: str = "order") -> torch.Tensor:
    """The sample order of one epoch: a permutation of range(n), int64 on the CPU, from (seed, purpose,
    epoch) alone (transfer runs draw theirs under the purpose "transfer-order")."""
    g = torch.Generator().manual_seed(derive_seed(seed, purpose, epoch))
    return torch.randperm(n, generator=g)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank's equal-length, strided share of an epoch order (the tail that does not divide is dropped).

    Strided, so that step s of W ranks with batch b covers exactly the images of step s of one
    process with batch W*b: a run's data does not depend on how its global batch is split."""
    m = order.numel() // world_size
    return order[rank : m * world_size : world_size]


def _check_rank(rank: int, world_size: int, batch_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _steps_per_epoch(n: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> int:
    _check_rank(rank, world_size, batch_size)
    per_rank = n // world_size
    steps = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    if steps == 0:
        raise ValueError(f"no full batch: {n} samples over {world_size} rank(s) give {per_rank} per rank, "
                         f"fewer than batch_size={batch_size} (lower it or use drop_last=False)")
    return steps


def _check_start(start_step: int) -> None:
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")


class MemoryBatches:
    """A TensorDataset resident on ``device`` (uint8), augmented in whole batches there.

    ``augment`` is a BatchAugment (or any ``f(uint8 batch, generator) -> float batch``; for a dataset
    with per-image ``sizes``, ``f(batch, generator, sizes=...)``); None yields the raw pixels as float
    (0..255, not normalised).
    """

    def __init__(self, ds: TensorDataset, batch_size: int, augment: Callable | None, device: torch.device | str,
                 seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 flips: Callable | None = None) -> None:
        self.device = torch.device(device)
        self.flips = flips
        self.steps_per_epoch = _steps_per_epoch(len(ds), batch_size, rank, world_size, drop_last)
        self.ds = ds
        self.images = ds.images.to(self.device)
        self.labels = ds.labels.to(self.device)
        self.sizes = None if ds.sizes is None else ds.sizes.to(self.device)
        self.n, self.batch_size, self.augment = len(ds), int(batch_size), augment
        self.seed, self.rank, self.world_size, self.drop_last = int(seed), rank, world_size, drop_last

    def __len__(self) -> int:
        return self.steps_per_epoch

    def close(self) -> None:
        """Nothing runs beside it (the batch sources share this call: `LoaderBatches.close`)."""

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for the epoch, in order (CPU int64)."""
        return shard(epoch_order(self.n, self.seed, epoch), self.rank, self.world_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _check_start(start_step)
        idx_all = self.indices(epoch).to(self.device)
        B = self.batch_size
        for s in range(start_step, self.steps_per_epoch):
            idx = idx_all[s * B : (s + 1) * B]
            x, y = self.images[idx], self.labels[idx]
            if self.flips is not None:
                widths = None if self.sizes is None else self.sizes[idx, 1]
                x = _flip_where(x, self.flips(idx, epoch), widths)
            if self.augment is None:
                x = x.float()
            else:
                g = torch.Generator(device=self.device).manual_seed(
                    derive_seed(self.seed, "augment", epoch, s, self.rank))
                x = self.augment(x, g) if self.sizes is None else self.augment(x, g, sizes=self.sizes[idx])
            yield x, y


def _flip_where(x: torch.Tensor, mask: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror the images of a [B, C, H, W] batch left-right where mask [B] is true. With ``widths`` [B]
    (images held in the top-left of the canvas), each image is mirrored within its own width and stays
    in the top-left corner."""
    mask = mask.to(x.device).view(-1, 1, 1, 1)
    if widths is None:
        return torch.where(mask, x.flip(-1), x)
    j = torch.arange(x.shape[-1], device=x.device)
    w = widths.to(x.device).view(-1, 1)
    cols = torch.where(j < w, w - 1 - j, j)                      # [B, W]: mirrored inside the image only
    mirrored = x.gather(3, cols.view(-1, 1, 1, x.shape[-1]).expand_as(x))
    return torch.where(mask, mirrored, x)


class _SeededView(Dataset):
    """ds[(epoch, i)] -> (transform(image_i, generator seeded by (seed, epoch, i)), label_i)."""

    def __init__(self, ds: Dataset, transform: Callable | None, seed: int, flips: Callable | None = None) -> None:
        self.ds, self.transform, self.seed, self.flips = ds, transform, seed, flips

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = key
        img, label = self.ds[i]
        if self.flips is not None:
            img = _flip_where(img[None], self.flips(torch.tensor([i]), epoch))[0]
        if self.transform is None:
            return img.float(), label
        g = torch.Generator().manual_seed(derive_seed(self.seed, "sample", epoch, i))
        return self.transform(img, generator=g), label


class _EpochBatchSampler(Sampler):
    """Yields this rank's batches of (epoch, index) for the epoch/start step set by the owner."""

    def __init__(self, owner: LoaderBatches) -> None:
        self.owner = owner
        self.epoch = 0
        self.start_step = 0

    def __len__(self) -> int:
        return max(0, self.owner.steps_per_epoch - self.start_step)

    def __iter__(self):
        o = self.owner
        idx = shard(epoch_order(o.n, o.seed, self.epoch), o.rank, o.world_size).tolist()
        B = o.batch_size
        for s in range(self.start_step, o.steps_per_epoch):
            yield [(self.epoch, i) for i in idx[s * B : (s + 1) * B]]


class LoaderBatches:
    """A per-image Dataset (``ds[i] -> (uint8 [C,H,W], label)``) through DataLoader workers.

    ``transform_per_image`` is called as ``transform(img, generator=g)`` and must return a float
    [C, S, S] tensor (``BatchAugment.per_image``, ``functools.partial(paper_train_transform, out_size=..)``
    or an ``EvalTransform``); None yields raw float pixels (then all images must share one size).
    ``timeout`` > 0 (seconds) makes a hung or stalled worker a DataTimeoutError instead of a hang.
    Workers persist across epochs.
    """

    def __init__(self, ds: Dataset, batch_size: int, transform_per_image: Callable | None, device: torch.device | str,
                 seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = True, workers: int = 2,
                 timeout: float = 0.0, flips: Callable | None = None) -> None:
        self.device = torch.device(device)
        self.steps_per_epoch = _steps_per_epoch(len(ds), batch_size, rank, world_size, drop_last)
        self.ds, self.n, self.batch_size = ds, len(ds), int(batch_size)
        self.seed, self.rank, self.world_size, self.drop_last = int(seed), rank, world_size, drop_last
        self.workers, self.timeout = int(workers), float(timeout)
        self._sampler = _EpochBatchSampler(self)
        self._pin = self.device.type == "cuda"
        self.loader = DataLoader(
            _SeededView(ds, transform_per_image, self.seed, flips), batch_sampler=self._sampler,
            num_workers=self.workers,
            pin_memory=self._pin, timeout=self.timeout if self.workers > 0 else 0.0,
            persistent_workers=self.workers > 0, prefetch_factor=4 if self.workers > 0 else None)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def close(self) -> None:
        """Stop the persistent workers now. Call it when done: stopped by the garbage collector instead, two
        workers took 10 s (each at its 5 s poll of its queue) against milliseconds here."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _check_start(start_step)
        self._sampler.epoch, self._sampler.start_step = epoch, start_step
        it = iter(self.loader)
        step = start_step

        def timed_out() -> DataTimeoutError:
            self.close()  # the stalled workers are of no further use
            return DataTimeoutError(
                f"LoaderBatches: no batch from the DataLoader workers within {self.timeout:g} s "
                f"(epoch {epoch}, step {step}, {self.workers} workers): a worker is hung or decoding "
                f"is too slow; check the data files or raise `timeout`")

        for x, y in _worker_batches(it, timed_out):
            yield x.to(self.device, non_blocking=self._pin), y.to(self.device, non_blocking=self._pin)
            step += 1


def eval_batches(ds: Dataset, batch_size: int, transform: Callable | None, device: torch.device | str, rank: int = 0,
                 world_size: int = 1, workers: int = 2,
                 timeout: float = 0.0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every sample exactly once over all ranks, in dataset order, no padding duplicates.

    ``timeout`` > 0 (seconds) makes a hung evaluation worker a DataTimeoutError, as in training.

    Rank r gets the contiguous range [r·N // W, (r+1)·N // W), so ranks may differ by one sample and
    by one batch: sum the metrics (correct, count) across ranks, do not average per-rank means.
    A TensorDataset is sliced and transformed batch-wise on ``device`` (``transform(uint8 batch)``);
    any other dataset goes through DataLoader workers with ``transform(image)`` per image.
    """
    _check_rank(rank, world_size, batch_size)
    device = torch.device(device)
    n = len(ds)
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size
    if isinstance(ds, TensorDataset):
        for s in range(lo, hi, batch_size):
            x = ds.images[s : min(s + batch_size, hi)].to(device, non_blocking=True)
            y = ds.labels[s : min(s + batch_size, hi)].to(device, non_blocking=True)
            yield (x.float() if transform is None else transform(x)), y
        return
    view = _PlainView(ds, transform)
    loader = DataLoader(torch.utils.data.Subset(view, range(lo, hi)), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        timeout=timeout if workers > 0 else 0.0)
    it = iter(loader)

    def timed_out() -> DataTimeoutError:
        return DataTimeoutError(f"eval_batches: no batch from the DataLoader workers within {timeout:g} s "
                                f"({workers} workers): a worker is hung or decoding is too slow")

    for x, y in _worker_batches(it, timed_out):
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class _PlainView(Dataset):
    def __init__(self, ds: Dataset, transform: Callable | None) -> None:
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.ds[i]
        return (img.float() if self.transform is None else self.transform(img)), label
