"""A small detection/segmentation folder of another kind of object than Fashion-MNIST: coloured shapes.

    python benchmarks/shapes_folder.py runs/shapes --train 500 --test 100

writes the same images twice, in the two layouts `bagoftricks transfer` reads:

    OUT/voc/VOCdevkit/VOC2012/   JPEGImages/*.jpg, Annotations/*.xml (VOC boxes, the class names below),
                                 SegmentationClass/*.png (palette, 0 = background, k = CLASSES[k - 1],
                                 255 = a one-pixel outline around each shape, not scored, as VOC's),
                                 ImageSets/{Main,Segmentation}/{train,val}.txt
    OUT/ade20k/                  images/{training,validation}/*.jpg, annotations/{training,validation}/*.png
                                 (gray; 1 = the background, 1 + k = CLASSES[k - 1]; no 0 = unlabelled pixel)

Each image is W x H with W, H uniform in SIZE (so aspect ratios vary and every image is resized by the
reader), on a textured background (a shaded gradient, stripes, checks or blotches, in random colours,
with noise), holding 1-4 shapes among CLASSES — disc, square, triangle, ring, cross — of a random colour,
rotation and size (radius 7-30 % of the shorter side: small to large objects), each drawn over the ones
before it, so shapes occlude each other. Targets come from what stays visible: a shape's box is the tight
box of its visible pixels, and a shape with fewer than MIN_VISIBLE visible pixels has no box (its few
pixels stay in the label map). Image i of a split is drawn from a generator seeded by (seed, split, i),
so a folder is the same on every machine. JPEG quality 90.

Tests make their own small folders with `write_folder(tmp, train=8, test=4, size=(40, 56))`.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("disc", "square", "triangle", "ring", "cross")
SIZE = (96, 160)       # image side range in pixels (width and height drawn separately)
RADIUS = (0.07, 0.30)  # shape radius as a fraction of the shorter side
MAX_SHAPES = 4
MIN_VISIBLE = 20       # visible pixels a shape needs to get a box
OUTLINE = 255          # VOC's not-scored label


def _rng(seed: int, split: str, i: int) -> np.random.Generator:
    h = hashlib.sha256(f"shapes/{seed}/{split}/{i}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured float32 [h, w, 3] background: gradient, stripes, checks or blotches, plus noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = _colour(rng), _colour(rng)
    kind = int(rng.integers(0, 4))
    if kind == 0:    # a shaded gradient in a random direction
        th = rng.uniform(0, 2 * np.pi)
        t = (np.cos(th) * x + np.sin(th) * y)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == 1:  # stripes
        th, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        t = (np.sin(2 * np.pi * (np.cos(th) * x + np.sin(th) * y) / period) > 0).astype(np.float32)
    elif kind == 2:  # checks
        cell = rng.uniform(6, 18)
        t = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    else:            # blotches: coarse noise, upsampled
        coarse = rng.uniform(0, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32).clip(0, 1)
    img = a * (1 - t[..., None]) + b * t[..., None]
    return img + rng.normal(0, 8, (h, w, 3)).astype(np.float32)


def shape_mask(kind: str, h: int, w: int, cx: float, cy: float, r: float, th: float) -> np.ndarray:
    """bool [h, w]: the pixels of a shape of radius r centred at (cx, cy), rotated by th."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    u, v = np.cos(th) * dx + np.sin(th) * dy, -np.sin(th) * dx + np.cos(th) * dy
    d = np.hypot(dx, dy)
    if kind == "disc":
        return d <= r
    if kind == "ring":
        return (d <= r) & (d >= 0.55 * r)
    if kind == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == "cross":
        arm = r / 3
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= r))
    if kind == "triangle":  # equilateral, inscribed in the circle of radius r
        inside = np.ones((h, w), bool)
        for k in range(3):
            a = th + np.pi / 2 + 2 * np.pi * k / 3 + np.pi  # the outward normal of edge k
            inside &= (np.cos(a) * dx + np.sin(a) * dy) <= r / 2
        return inside
    raise ValueError(f"unknown shape {kind!r}")


def make_image(rng: np.random.Generator, size: tuple[int, int] = SIZE):
    """(uint8 [h, w, 3] image, int [h, w] owner map (0 = background, j = shape j), [(class index, box or None)])."""
    h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
    img = background(rng, h, w)
    owner = np.zeros((h, w), np.int32)
    kinds = []
    for j in range(int(rng.integers(1, MAX_SHAPES + 1))):
        k = int(rng.integers(0, len(CLASSES)))
        r = rng.uniform(*RADIUS) * min(h, w)
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        on = shape_mask(CLASSES[k], h, w, cx, cy, r, rng.uniform(0, 2 * np.pi))
        shade = 1 + 0.25 * (np.mgrid[0:h, 0:w][0] - cy) / max(r, 1.0)  # lit from above
        fill = _colour(rng) * shade.clip(0.6, 1.4)[..., None]
        img[on] = fill[on] + rng.normal(0, 6, (int(on.sum()), 3))
        owner[on] = j + 1
        kinds.append(k)
    objects = []
    for j, k in enumerate(kinds):
        ys, xs = np.nonzero(owner == j + 1)
        box = None if ys.size < MIN_VISIBLE else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append((k, box))
    return img.clip(0, 255).astype(np.uint8), owner, objects


def _outline(owner: np.ndarray) -> np.ndarray:
    """bool: pixels next to another owner (4-neighbourhood), VOC's not-scored border."""
    edge = np.zeros(owner.shape, bool)
    edge[1:] |= owner[1:] != owner[:-1]
    edge[:-1] |= owner[1:] != owner[:-1]
    edge[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    edge[:, :-1] |= owner[:, 1:] != owner[:, :-1]
    return edge


def voc_xml(name: str, w: int, h: int, objects) -> str:
    objs = "".join(
        f"<object><name>{CLASSES[k]}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for k, (x1, y1, x2, y2) in ((k, b) for k, b in objects if b is not None))
    return (f"<annotation><folder>VOC2012</folder><filename>{name}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>1</segmented>{objs}</annotation>\n")


def _palette() -> list[int]:
    pal = [0, 0, 0] + [v for k in range(1, 256) for v in ((k * 67) % 256, (k * 141) % 256, (k * 29) % 256)]
    pal[3 * OUTLINE:3 * OUTLINE + 3] = [224, 224, 192]  # VOC's outline colour
    return pal


def _dirs(out: Path) -> tuple[Path, Path]:
    voc, ade = out / "voc" / "VOCdevkit" / "VOC2012", out / "ade20k"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("images/training", "images/validation", "annotations/training", "annotations/validation"):
        (ade / sub).mkdir(parents=True, exist_ok=True)
    return voc, ade


def write_folder(out: str | Path, train: int = 500, test: int = 100, seed: int = 0,
                 size: tuple[int, int] = SIZE) -> dict[str, Path]:
    """Write the VOC and ADE20K layouts under `out`; returns {"voc": VOCdevkit folder, "ade20k": its root}."""
    out = Path(out)
    voc, ade = _dirs(out)
    for split, count, ade_split in (("train", train, "training"), ("val", test, "validation")):
        ids = []
        for i in range(count):
            img, owner, objects = make_image(_rng(seed, split, i), size)
            if all(b is None for _, b in objects):
                continue  # every shape hidden: VOC has no annotation without objects (rare)
            name = f"{split}_{i:05d}"
            ids.append(name)
            h, w = owner.shape
            labels = np.zeros((h, w), np.uint8)
            for j, (k, _) in enumerate(objects):
                labels[owner == j + 1] = k + 1
            Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
            (voc / "Annotations" / f"{name}.xml").write_text(voc_xml(name, w, h, objects))
            voc_map = np.where(_outline(owner), OUTLINE, labels).astype(np.uint8)
            png = Image.fromarray(voc_map, mode="P")
            png.putpalette(_palette())
            png.save(voc / "SegmentationClass" / f"{name}.png")
            Image.fromarray(img).save(ade / "images" / ade_split / f"{name}.jpg", quality=90)
            ann = Image.fromarray((labels + 1).astype(np.uint8), mode="L")
            ann.save(ade / "annotations" / ade_split / f"{name}.png")
        for sub in ("Main", "Segmentation"):
            (voc / "ImageSets" / sub / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
    return {"voc": out / "voc" / "VOCdevkit", "ade20k": ade}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (voc/ and ade20k/ inside)")
    p.add_argument("--train", type=int, default=500, help="training images (default 500)")
    p.add_argument("--test", type=int, default=100, help="test (val) images (default 100)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = write_folder(a.out, a.train, a.test, a.seed)
    print(f"data.name=voc data.root={paths['voc']}\ndata.name=ade20k data.root={paths['ade20k']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
