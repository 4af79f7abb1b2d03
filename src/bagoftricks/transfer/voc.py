"""PASCAL VOC: `VOCdevkit/VOC20xx` with JPEGImages, Annotations/*.xml, ImageSets/Main|Segmentation and
SegmentationClass PNGs (255 = not scored). torchvision's VOCDetection / VOCSegmentation list the files
and parse the XML; this module checks what they read.

data.root is the VOCdevkit folder (the year is the one VOC20xx folder inside) or a VOC20xx folder.
Splits: train = ImageSets/*/train.txt; test = test.txt when there is one (VOC2007), else val.txt.
Detection classes are the 20 VOC classes when every name in the training annotations is one of them,
else the sorted names found there. Boxes are converted from VOC's 1-based pixels to pixel edges.
A malformed XML, a missing image, a box outside its image, an annotation without objects or an object
of a class the training split lacks: an error naming the file (data.strict), or skipped and counted.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from bagoftricks.errors import DataError
from bagoftricks.transfer.files import Collector, ignored_mask, no_boxes, read_image, read_label_map
from bagoftricks.transfer.targets import SceneSplit

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def voc_folder(root: str) -> tuple[str, str]:
    """(the folder holding VOCdevkit, the year) for data.root = VOCdevkit or VOCdevkit/VOC20xx."""
    p = Path(os.path.expanduser(root))
    if p.name.startswith("VOC20") and p.parent.name == "VOCdevkit":
        return str(p.parent.parent), p.name[3:]
    years = sorted(d.name[3:] for d in p.glob("VOC20??") if d.is_dir())
    if p.name != "VOCdevkit" or len(years) != 1:
        found = f"found {', '.join('VOC' + y for y in years)}" if years else "found no VOC20xx folder"
        raise DataError(f"data.root: {p}: expected a VOCdevkit folder holding one VOC20xx folder ({found}); "
                        f"with several, set data.root to VOCdevkit/VOC20xx")
    return str(p.parent), years[0]


def _image_set(parent: str, year: str, split: str, sub: str) -> str:
    if split == "train":
        return "train"
    test = os.path.join(parent, "VOCdevkit", f"VOC{year}", "ImageSets", sub, "test.txt")
    return "test" if os.path.isfile(test) else "val"


def _dataset(root: str, split: str, detect: bool):
    from torchvision.datasets import VOCDetection, VOCSegmentation
    parent, year = voc_folder(root)
    cls, sub = (VOCDetection, "Main") if detect else (VOCSegmentation, "Segmentation")
    image_set = _image_set(parent, year, split, sub)
    try:
        return cls(parent, year=year, image_set=image_set)
    except (OSError, RuntimeError, ValueError) as e:
        where = os.path.join(parent, "VOCdevkit", f"VOC{year}", "ImageSets", sub, f"{image_set}.txt")
        raise DataError(f"{where}: cannot list the {split} split ({e})") from None


def parse_objects(ds, path: str) -> list[tuple[str, list[float]]]:
    """[(class name, [xmin, ymin, xmax, ymax] as written)] of an annotation file, checked for shape."""
    try:
        tree = ds.parse_voc_xml(ET.parse(path).getroot())
    except FileNotFoundError:
        raise DataError(f"{path}: annotation not found") from None
    except ET.ParseError as e:
        raise DataError(f"{path}: malformed XML ({e})") from None
    objects = tree.get("annotation", {}).get("object", [])
    objects = objects if isinstance(objects, list) else [objects]
    if not objects:
        raise DataError(f"{path}: the annotation holds no objects")
    out = []
    for o in objects:
        try:
            b = o["bndbox"]
            out.append((o["name"], [float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax")]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: an object lacks a name or a numeric bndbox") from None
    return out


def _boxes(objects, path: str, hw: tuple[int, int], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = hw
    boxes, labels = [], []
    for name, (x1, y1, x2, y2) in objects:
        if name not in classes:
            raise DataError(f"{path}: class {name!r} is not among the training split's classes")
        x1, y1 = x1 - 1, y1 - 1  # 1-based pixels -> pixel edges
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise DataError(f"{path}: box {name} ({x1 + 1:g}, {y1 + 1:g}, {x2:g}, {y2:g}) lies outside the "
                            f"{w}x{h} image")
        boxes.append([x1, y1, x2, y2])
        labels.append(classes.index(name))
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def detection_classes(root: str) -> list[str]:
    """background + the 20 VOC classes, or the sorted names of the training annotations."""
    ds = _dataset(root, "train", True)
    names = set()
    for path in ds.annotations:
        try:
            names.update(n for n, _ in parse_objects(ds, path))
        except DataError:
            continue  # reported when the split is read
    return ["background", *(VOC_CLASSES if names <= set(VOC_CLASSES) else sorted(names))]


def load_voc(root: str, split: str, detect: bool, size: int, strict: bool) -> SceneSplit:
    """One split of a VOC folder, every sample resized to size x size."""
    ds = _dataset(root, split, detect)
    out = Collector(size, strict)
    if detect:
        classes = detection_classes(root)
        for img_path, ann in zip(ds.images, ds.annotations):
            def read(img_path=img_path, ann=ann):
                objects = parse_objects(ds, ann)
                image = read_image(img_path)
                boxes, labels = _boxes(objects, ann, tuple(image.shape[-2:]), classes)
                return image, {"boxes": boxes, "labels": labels, "mask": ignored_mask(image)}
            out.add(ann, read)
    else:
        classes = ["background", *VOC_CLASSES]
        for img_path, mask_path in zip(ds.images, ds.masks):
            def read(img_path=img_path, mask_path=mask_path):
                image = read_image(img_path)
                mask = read_label_map(mask_path, tuple(image.shape[-2:]))
                return image, {**dict(zip(("boxes", "labels"), no_boxes())), "mask": mask}
            out.add(mask_path, read)
    return out.split(classes, f"VOC {split} split at {root}")
