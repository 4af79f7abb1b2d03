"""Image folders decoded in batches on the training device (``data.decode: device``).

The per-image path (batches.LoaderBatches) decodes and augments every image on a CPU core in a DataLoader
worker, ~300 images per second per core at ImageNet's size (benchmarks/README.md): feeding a GPU's
thousands per second takes a dozen cores. Here the CPU only reads the files (threads, one batch ahead); a
batch of JPEGs is decoded at once on the device (``torchvision.io.decode_jpeg(device=...)``: nvJPEG on a GPU,
libjpeg-turbo on a CPU, where the threads decode too) and augmented there:

1. the §2 parameters of the whole batch are drawn at once by ``transforms.sample_params`` from each image's
   own size (the folder's probe recorded it), on a CPU generator seeded with (seed, "decode-augment",
   epoch, step, rank): the crop boxes are known on the host without reading anything back from the device;
2. each image's crop is cut out and resized to S x S exactly as the per-image reference does it
   (``F.interpolate``, bilinear, antialiased), then the batch is flipped, jittered, lit and normalised in
   one go (``BatchAugment.photometric``, the in-memory path's).

So given the same parameters an image comes out as on the per-image path (up to the order of the colour
operations' float rounding), and the parameters follow the same distribution, drawn by the same function
(tests/data/test_device_decode.py holds both to it); the two paths draw different crops for the same seed.
The data order is the other sources' (batches.epoch_order, sharded per rank) and every draw comes from
(seed, epoch, step): ``epoch(e, start_step=k)`` yields exactly batches k, k+1, ... of ``epoch(e)``.

Files that are not JPEGs (PNG, WebP, ...), and JPEGs the device's decoder refuses (CMYK, say), are decoded on
the CPU (images.decode_rgb) and moved to the device; ``cpu_decoded`` counts them. Unreadable files were
skipped and counted when the folder was listed (imagefolder.py), as on the other paths.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from bagoftricks.seeds import derive_seed

from .batches import _check_start, _steps_per_epoch, epoch_order, shard
from .common import read_bytes
from .images import decode_rgb
from .transforms import BatchAugment, crop_resize

JPEG = b"\xff\xd8\xff"


def _decode_cpu(path: str, data: bytes) -> torch.Tensor:
    """uint8 RGB [3, H, W] on the CPU: libjpeg-turbo for a JPEG, else images.decode_rgb (torchvision, PIL)."""
    if data[:3] == JPEG:
        from torchvision.io import ImageReadMode, decode_jpeg
        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # a variant libjpeg-turbo's torchvision binding refuses: decode_rgb's PIL fallback
    return decode_rgb(path)


class DeviceDecodeBatches:
    """An ImageFolderDataset's training batches, decoded and augmented in batches on ``device``.

    ``augment`` is the run's BatchAugment (mode "paper"); ``flips(index, epoch) -> bool`` the alternating flips
    (applied to each whole image before its crop, as on the per-image path); ``threads`` read (and on a CPU
    decode) the files. Batches are ``(x float [B, 3, S, S], y int64 [B])`` on the device.
    """

    def __init__(self, ds, batch_size: int, augment: BatchAugment, device: torch.device | str, seed: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True, flips: Callable | None = None,
                 threads: int = 2) -> None:
        if augment.mode != "paper":
            raise ValueError(f"DeviceDecodeBatches draws the §2 crop on each image's size: mode 'paper', "
                             f"got {augment.mode!r}")
        self.device = torch.device(device)
        self.steps_per_epoch = _steps_per_epoch(len(ds), batch_size, rank, world_size, drop_last)
        self.ds, self.n, self.batch_size, self.augment, self.flips = ds, len(ds), int(batch_size), augment, flips
        self.seed, self.rank, self.world_size, self.drop_last = int(seed), rank, world_size, drop_last
        self.sizes = torch.tensor(ds.sizes, dtype=torch.int64)  # (H, W) of every image, from the folder's probe
        self.pool = ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="bagoftricks-decode")
        self.cpu_decoded = 0  # images decoded on the CPU although the device is another (not JPEG, or refused)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def close(self) -> None:
        """Stop the decoding threads (after the reads in flight)."""
        self.pool.shutdown(wait=True)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for the epoch, in order (CPU int64)."""
        return shard(epoch_order(self.n, self.seed, epoch), self.rank, self.world_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _check_start(start_step)
        order = self.indices(epoch).tolist()
        B = self.batch_size
        ids = lambda s: order[s * B : (s + 1) * B]  # noqa: E731
        ahead = self._read(ids(start_step)) if start_step < self.steps_per_epoch else None
        for s in range(start_step, self.steps_per_epoch):
            files = [f.result() for f in ahead]
            if s + 1 < self.steps_per_epoch:  # the next batch's files are read while this one is decoded
                ahead = self._read(ids(s + 1))
            yield self.batch(ids(s), files, epoch, s)

    def _read(self, ids: list[int]) -> list:
        return [self.pool.submit(read_bytes, self.ds.paths[i]) for i in ids]

    def params(self, ids: list[int], epoch: int, s: int) -> dict[str, torch.Tensor]:
        """The §2 parameters of step s's images, drawn from their own sizes on a CPU generator."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "decode-augment", epoch, s, self.rank))
        sizes = self.sizes[ids]
        return self.augment.sample_params(len(ids), 0, 0, g, sizes=sizes)

    def batch(self, ids: list[int], files: list[bytes], epoch: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step s of `epoch`: decode, mirror (alternating flips), crop and resize each image; then the batch's flip
        and photometric part."""
        p = self.params(ids, epoch, s)
        boxes = p["crop"].tolist()
        mirror = [False] * len(ids) if self.flips is None else self.flips(torch.tensor(ids), epoch).tolist()
        S = self.augment.out_size
        if self.device.type == "cpu":
            work = lambda k: crop_resize(self._oriented(_decode_cpu(self.ds.paths[ids[k]], files[k]), mirror[k]),  # noqa: E731
                                         boxes[k], S)
            crops = list(self.pool.map(work, range(len(ids))))
        else:
            images = self._decode_device(ids, files)
            crops = [crop_resize(self._oriented(im, m), b, S) for im, m, b in zip(images, mirror, boxes)]
        x = torch.stack(crops)
        dev = _on_device(p, self.device)
        x = torch.where(dev["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
        y = self.ds.labels[ids].to(self.device, non_blocking=True)
        return self.augment.photometric(x, dev), y

    @staticmethod
    def _oriented(img: torch.Tensor, mirror: bool) -> torch.Tensor:
        return img.flip(-1) if mirror else img

    def _decode_device(self, ids: list[int], files: list[bytes]) -> list[torch.Tensor]:
        """uint8 RGB images on the device: the batch's JPEGs in one call of the device's decoder, the rest (and
        a batch the decoder refuses, image by image) on the CPU."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[torch.Tensor | None] = [None] * len(ids)
        jpegs = [k for k, f in enumerate(files) if f[:3] == JPEG]
        data = [torch.frombuffer(bytearray(files[k]), dtype=torch.uint8) for k in jpegs]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device) if data else []
        except RuntimeError:
            decoded = [self._decode_one(d, ids[k], files[k]) for k, d in zip(jpegs, data)]
        for k, im in zip(jpegs, decoded):
            out[k] = im
        for k, im in enumerate(out):
            if im is None:
                self.cpu_decoded += 1
                out[k] = decode_rgb(self.ds.paths[ids[k]]).to(self.device, non_blocking=True)
        return out

    def _decode_one(self, data: torch.Tensor, i: int, raw: bytes) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            self.cpu_decoded += 1
            return _decode_cpu(self.ds.paths[i], raw).to(self.device, non_blocking=True)


def _on_device(p: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The per-image parameters the device needs (flip, jitter factors, lighting), in one host-to-device copy
    that does not wait for the device."""
    packed = torch.cat([p["flip"].float()[:, None], p["brightness"][:, None], p["saturation"][:, None],
                        p["hue"][:, None], p["alpha"]], 1).float()
    if device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=True)
    return {"flip": packed[:, 0] > 0.5, "brightness": packed[:, 1], "saturation": packed[:, 2], "hue": packed[:, 3],
            "alpha": packed[:, 4:7]}
