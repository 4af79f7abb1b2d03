"""COCO-json boxes: data.root holds annotations/instances_<name>.json and the images in <name>/ (COCO's
own layout: instances_train2017.json with train2017/). The split 'train' reads the one json whose name
starts with instances_train, 'test' the one starting with instances_val. pycocotools reads the json.

Categories become classes 1..K in the order of their ids (0 is the background). Crowd annotations
are left out. A json that does not parse, a missing image, a box outside its image, an image without
annotations: an error naming the file (data.strict), or skipped and counted.
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import torch

from bagoftricks.errors import DataError
from bagoftricks.transfer.files import Collector, ignored_mask, read_image
from bagoftricks.transfer.targets import SceneSplit

PREFIX = {"train": "instances_train", "test": "instances_val"}


def annotation_file(root: str, split: str) -> str:
    folder = os.path.join(root, "annotations")
    found = sorted(f for f in os.listdir(folder) if f.startswith(PREFIX[split]) and f.endswith(".json")) \
        if os.path.isdir(folder) else []
    if len(found) != 1:
        raise DataError(f"data.root: expected one {folder}/{PREFIX[split]}*.json, found {len(found)}")
    return os.path.join(folder, found[0])


def _coco(path: str):
    from pycocotools.coco import COCO
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            return COCO(path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except (KeyError, TypeError, AssertionError) as e:
        raise DataError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from None


def _boxes(coco, info: dict, cat_index: dict, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])) if not a.get("iscrowd", 0)]
    if not anns:
        raise DataError(f"{path}: image {info['file_name']} has no annotations")
    w, h, boxes = info["width"], info["height"], []
    for a in anns:
        x, y, bw, bh = (float(v) for v in a["bbox"])
        if not (x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w + 0.5 and y + bh <= h + 0.5):
            raise DataError(f"{path}: annotation {a.get('id')} box [{x:g}, {y:g}, {bw:g}, {bh:g}] lies outside "
                            f"image {info['file_name']} ({w}x{h})")
        boxes.append([x, y, min(x + bw, w), min(y + bh, h)])
    labels = [cat_index[a["category_id"]] for a in anns]
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def classes_of(root: str) -> tuple[list[str], dict[int, int]]:
    """Class names (background first) and category id -> label, from the training json."""
    coco = _coco(annotation_file(root, "train"))
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    return ["background", *(c["name"] for c in cats)], {c["id"]: k + 1 for k, c in enumerate(cats)}


def load_coco(root: str, split: str, size: int, strict: bool) -> SceneSplit:
    """One split of a COCO-json folder (detection), every sample resized to size x size."""
    root = os.path.expanduser(root)
    path = annotation_file(root, split)
    classes, cat_index = classes_of(root)
    coco = _coco(path)
    images = os.path.join(root, os.path.basename(path)[len("instances_"):-len(".json")])
    out = Collector(size, strict)
    for info in coco.loadImgs(sorted(coco.getImgIds())):
        def read(info=info):
            boxes, labels = _boxes(coco, info, cat_index, path)
            image = read_image(os.path.join(images, info["file_name"]))
            return image, {"boxes": boxes, "labels": labels, "mask": ignored_mask(image)}
        out.add(os.path.join(images, info["file_name"]), read)
    return out.split(classes, f"COCO {split} split at {root}")
