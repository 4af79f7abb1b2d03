"""JPEG loader throughput per core: the image-folder path (torchvision.io decoding, the paper's
random-resized crop + flip + colour jitter + PCA lighting at 224 px, DataLoader workers) on
ImageNet-sized JPEGs, without any model.

    python benchmarks/jpeg_loader.py [--images 1536] [--workers 1 2] [--root .data/jpeg-bench]

The folder is made once: 500x375 JPEGs (ImageNet's typical size) at quality 90 whose content is
smooth shapes plus fine noise, so that files weigh ~100 KB like real photos. Each worker count runs
one untimed epoch (workers start, page cache warms), then one timed epoch; img/s / workers is the
per-core rate (the main process only collates). Cores needed for a GPU's rate R: R / per-core.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bagoftricks import recipe as brecipe
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import setup


def make_folder(root: Path, images: int, classes: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            path = d / f"{i:05d}.jpg"
            if path.is_file():
                continue
            d.mkdir(parents=True, exist_ok=True)
            low = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
            img = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC), dtype=np.float32)
            img += rng.normal(0, 12, img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def measure(root: Path, workers: int, batch: int) -> float:
    r = brecipe.validate(brecipe.apply_overrides(brecipe.Recipe(), [
        "data.name=imagefolder", f"data.root={root}", "data.image_size=224", "data.augment=paper",
        "data.in_memory=never", f"data.workers={workers}", f"train.batch_size={batch}", "train.device=cpu"]))
    data = setup.build_data(r, torch.device("cpu"), bdist.DistInfo())
    for _ in data.train.epoch(0):  # warm: workers up, files in the page cache
        pass
    n, t = 0, None
    for x, _ in data.train.epoch(1):
        if t is None:  # time from the first batch on: worker start-up is not throughput
            t = time.perf_counter()
            continue
        n += x.shape[0]
    rate = n / (time.perf_counter() - t)
    data.train.close()
    return rate


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=1536)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--root", default=".data/jpeg-bench")
    a = p.parse_args()
    root = Path(a.root)
    make_folder(root, a.images)
    sizes = [f.stat().st_size for f in (root / "train").rglob("*.jpg")]
    print(f"{len(sizes)} JPEGs, mean {np.mean(sizes) / 1024:.0f} KiB, 500x375")
    for w in a.workers:
        rate = measure(root, w, a.batch)
        print(f"| {w} | {rate:.0f} | {rate / w:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
