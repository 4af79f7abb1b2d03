"""Fashion-MNIST scenes: a detection and segmentation dataset built from the IDX files alone.

Each scene is a square canvas (side = data.image_size) holding 1-4 garments, each a Fashion-MNIST
image scaled to a side in [canvas/6, canvas/2] and placed at random; a later garment covers an
earlier one wherever its own pixels are above THRESHOLD. The targets come from what is visible:

- the label map is the class (1..10) of the garment that owns each pixel, 0 (background) elsewhere;
- a garment's box is the tight box of its visible pixels; a garment with fewer than MIN_VISIBLE
  visible pixels (nearly all covered) gets no box, and its few pixels stay in the label map.

Scene i of a split is drawn from a generator seeded by ("fmnist-scenes", split, i), with garments
from that split only (train scenes from the 60000 training images, test scenes from the 10000 test
images), so scene i is the same whatever the number of scenes asked for.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from bagoftricks.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist
from bagoftricks.seeds import derive_seed
from bagoftricks.transfer.targets import SceneSplit

THRESHOLD = 40      # a garment pixel (0..255) above this is the garment's, below it is see-through
MIN_VISIBLE = 12    # visible pixels a garment needs to get a box
MAX_OBJECTS = 4     # garments per scene: uniform in 1..MAX_OBJECTS
SCALE = (1 / 6, 1 / 2)  # garment side as a fraction of the canvas side (28 px garments: 16-48 px at 96)
CLASSES = ["background", *FASHION_MNIST_CLASSES]


def _garment(image: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 uint8 garment resized to side x side (bilinear, antialiased), as float32 0..255."""
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def make_scene(images: np.ndarray, labels: np.ndarray, canvas: int, rng: np.random.Generator):
    """One scene from the garments `images` [N, 28, 28] / `labels` [N]: (image uint8 [1, S, S], target)."""
    img = np.zeros((canvas, canvas), np.float32)
    cls = np.zeros((canvas, canvas), np.uint8)
    inst = np.zeros((canvas, canvas), np.uint8)
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    lo, hi = max(4, round(canvas * SCALE[0])), max(5, round(canvas * SCALE[1]))
    kinds = []
    for j in range(count):
        k = int(rng.integers(0, len(images)))
        side = int(rng.integers(lo, hi + 1))
        y0, x0 = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
        g = _garment(images[k], side)
        on = g > THRESHOLD
        region = (slice(y0, y0 + side), slice(x0, x0 + side))
        img[region][on] = g[on]
        cls[region][on] = int(labels[k]) + 1
        inst[region][on] = j + 1
        kinds.append(int(labels[k]) + 1)
    boxes, keep = _visible_boxes(inst, count)
    labels_kept = torch.tensor([kinds[j] for j in keep], dtype=torch.int64)
    target = {"boxes": boxes, "labels": labels_kept, "mask": torch.from_numpy(cls)}
    return torch.from_numpy(np.rint(img).clip(0, 255).astype(np.uint8))[None], target


def _visible_boxes(inst: np.ndarray, count: int) -> tuple[torch.Tensor, list[int]]:
    """Tight (x1, y1, x2, y2) boxes (pixel edges) of each instance's visible pixels, and which instances have one."""
    boxes, keep = [], []
    for j in range(count):
        ys, xs = np.nonzero(inst == j + 1)
        if ys.size < MIN_VISIBLE:
            continue
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        keep.append(j)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), keep


@functools.lru_cache(maxsize=2)
def _garments(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's garments [N, 28, 28] and labels [N] (kept: a run and its evaluation read them again)."""
    ds = load_fashion_mnist(root, split)
    return ds.images[:, 0].numpy(), ds.labels.numpy()


def load_scenes(root: str, split: str, count: int, canvas: int) -> SceneSplit:
    """`count` scenes of side `canvas` from the Fashion-MNIST IDX files in `root` ('train' or 'test')."""
    images, labels = _garments(root, split)
    out_images, targets = [], []
    for i in range(count):
        rng = np.random.default_rng(derive_seed("fmnist-scenes", split, i))
        image, target = make_scene(images, labels, canvas, rng)
        out_images.append(image)
        targets.append(target)
    return SceneSplit(out_images, targets, list(CLASSES))
