"""VOC and ADE20K folders made here: they load, train and evaluate; bad annotations are errors naming the
file under data.strict, or skipped and counted."""
import numpy as np
import pytest
import torch
from PIL import Image

from bagoftricks.errors import DataError, RecipeError
from bagoftricks.files import read_jsonl
from bagoftricks.transfer.ade20k import load_ade20k
from bagoftricks.transfer.loop import run_transfer
from bagoftricks.transfer.targets import IGNORE
from bagoftricks.transfer.voc import VOC_CLASSES, load_voc
from tests.transfer.conftest import tiny

OBJ = "<object><name>{}</name><difficult>0</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>" \
      "<ymax>{}</ymax></bndbox></object>"


def _xml(objects, w=40, h=40):
    body = "".join(OBJ.format(*o) for o in objects)
    return f"<annotation><size><width>{w}</width><height>{h}</height></size>{body}</annotation>"


def make_voc(root, names=("cat", "dog"), n=4):
    """VOCdevkit/VOC2012 with n train and n val images of 40x40, one or two objects each, and label maps."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        ids = [f"{split}{i}" for i in range(n)]
        for i, name in enumerate(ids):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            objs = [(names[i % 2], 3, 5, 20, 30)] + ([(names[1], 21, 1, 40, 40)] if i % 2 else [])
            (voc / "Annotations" / f"{name}.xml").write_text(_xml(objs))
            m = np.zeros((40, 40), np.uint8)
            m[4:30, 2:20], m[0, :] = 8, 255
            png = Image.fromarray(m, mode="P")
            png.putpalette(list(range(256)) * 3)   # a full palette: PNG keeps the indices as written
            png.save(voc / "SegmentationClass" / f"{name}.png")
        for sub in ("Main", "Segmentation"):
            (voc / "ImageSets" / sub / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit"


def make_ade(root, n=4):
    rng = np.random.default_rng(1)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"a{i}.jpg")
            m = np.zeros((24, 32), np.uint8)
            m[:12], m[12:, :16] = 3, 150
            Image.fromarray(m, mode="L").save(root / "annotations" / split / f"a{i}.png")
    return root


def test_voc_detection_boxes_classes_and_split(tmp_path):
    root = make_voc(tmp_path)
    s = load_voc(str(root), "train", True, 40, strict=True)
    assert s.classes == ["background", *VOC_CLASSES] and len(s) == 4
    t = s.targets[1]
    assert t["boxes"].tolist() == [[2.0, 4.0, 20.0, 30.0], [20.0, 0.0, 40.0, 40.0]]   # 1-based -> pixel edges
    assert [s.classes[k] for k in t["labels"]] == ["dog", "dog"]
    assert (t["mask"] == IGNORE).all()                      # detection samples score no pixels
    half = load_voc(str(root / "VOC2012"), "test", True, 20, strict=True)   # val split; resized to 20 px
    assert half.images[1].shape == (3, 20, 20) and half.targets[1]["boxes"][0].tolist() == [1.0, 2.0, 10.0, 15.0]


def test_voc_classes_from_the_annotations(tmp_path):
    s = load_voc(str(make_voc(tmp_path, names=("widget", "gadget"))), "train", True, 40, strict=True)
    assert s.classes == ["background", "gadget", "widget"]


def test_voc_segmentation_keeps_255(tmp_path):
    s = load_voc(str(make_voc(tmp_path)), "train", False, 40, strict=True)
    m = s.targets[0]["mask"]
    assert (m[0] == IGNORE).all() and m[10, 10] == 8 and m[35, 35] == 0 and len(s.targets[0]["boxes"]) == 0


@pytest.mark.parametrize("damage,message", [
    (lambda v: (v / "Annotations" / "train1.xml").write_text("<annotation><object>"), "malformed XML"),
    (lambda v: (v / "JPEGImages" / "train1.jpg").unlink(), "image not found"),
    (lambda v: (v / "Annotations" / "train1.xml").write_text(_xml([("cat", 3, 5, 60, 30)])), "lies outside"),
    (lambda v: (v / "Annotations" / "train1.xml").write_text(_xml([])), "holds no objects"),
])
def test_voc_bad_sample_error_names_file_or_is_skipped(tmp_path, damage, message):
    root = make_voc(tmp_path)
    damage(root / "VOC2012")
    with pytest.raises(DataError, match=message) as e:
        load_voc(str(root), "train", True, 40, strict=True)
    assert "train1." in str(e.value)
    s = load_voc(str(root), "train", True, 40, strict=False)
    assert len(s) == 3 and len(s.skipped) == 1 and "train1.xml" in s.skipped[0][0] and message in s.skipped[0][1]


def test_voc_folder_errors(tmp_path):
    with pytest.raises(DataError, match="expected a VOCdevkit folder"):
        load_voc(str(tmp_path), "train", True, 40, strict=True)
    root = make_voc(tmp_path)
    (root / "VOC2012" / "ImageSets" / "Main" / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt: cannot list the test split"):
        load_voc(str(root), "test", True, 40, strict=True)


def test_ade20k_zero_is_ignored_and_bad_files(tmp_path):
    root = make_ade(tmp_path)
    s = load_ade20k(str(root), "train", 16, strict=True)
    assert len(s) == 4 and s.num_classes == 151 and s.images[0].shape == (3, 16, 16)
    m = s.targets[0]["mask"]
    assert set(m.unique().tolist()) == {3, 150, IGNORE}
    (root / "annotations" / "training" / "a2.png").unlink()
    with pytest.raises(DataError, match="a2.png: label map not found"):
        load_ade20k(str(root), "train", 16, strict=True)
    assert len(load_ade20k(str(root), "train", 16, strict=False).skipped) == 1
    Image.fromarray(np.full((24, 32), 200, np.uint8), mode="L").save(root / "annotations" / "training" / "a2.png")
    with pytest.raises(DataError, match="label 200 is above ADE20K's 150"):
        load_ade20k(str(root), "train", 16, strict=True)


def test_voc_detection_and_ade_segmentation_train_and_evaluate(tmp_path):
    voc = make_voc(tmp_path / "v")
    r = tiny("data.name=voc", f"data.root={voc}", "data.image_size=40", "train.epochs=1", "model.arch=resnet20")
    final = run_transfer(r, tmp_path / "det", progress=False)
    assert 0 <= final["map_50"] <= 100 and read_jsonl(tmp_path / "det" / "metrics.jsonl")[0]["epoch"] == 1
    ade = make_ade(tmp_path / "a")
    r = tiny("data.name=ade20k", f"data.root={ade}", "transfer.task=segment", "train.epochs=1")
    final = run_transfer(r, tmp_path / "seg", progress=False)
    assert 0 <= final["miou"] <= 100 and 0 <= final["pixel_acc"] <= 100
    with pytest.raises(RecipeError, match="ade20k has label maps only"):
        run_transfer(tiny("data.name=ade20k", f"data.root={ade}"), tmp_path / "x", progress=False)
    with pytest.raises(RecipeError, match="data.root: voc needs its folder"):
        run_transfer(tiny("data.name=voc"), tmp_path / "y", progress=False)
    assert torch.get_num_threads() == 1


def make_coco(root, n=3):
    import json as _json
    rng = np.random.default_rng(2)
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / split / f"{i}.jpg")
            images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 40, "height": 30})
            anns.append({"id": 10 + i, "image_id": i + 1, "category_id": 7 if i % 2 else 3, "bbox": [2, 4, 10, 20],
                         "area": 200, "iscrowd": 0})
        doc = {"images": images, "annotations": anns,
               "categories": [{"id": 7, "name": "kite"}, {"id": 3, "name": "car"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(_json.dumps(doc))
    return root


def test_coco_boxes_classes_and_bad_files(tmp_path):
    from bagoftricks.transfer.coco import load_coco
    root = make_coco(tmp_path)
    s = load_coco(str(root), "train", 40, strict=True)
    assert s.classes == ["background", "car", "kite"] and len(s) == 3
    assert s.targets[1]["labels"].tolist() == [2] and s.targets[0]["labels"].tolist() == [1]
    want = torch.tensor([[2.0, 4 * 40 / 30, 12.0, 24 * 40 / 30]])    # xywh -> xyxy; 30 px high -> 40
    assert torch.allclose(s.targets[0]["boxes"], want)
    (root / "train2017" / "1.jpg").unlink()
    with pytest.raises(DataError, match="1.jpg: image not found"):
        load_coco(str(root), "train", 40, strict=True)
    assert len(load_coco(str(root), "train", 40, strict=False).skipped) == 1
    (root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(DataError, match="instances_val2017.json: not valid JSON"):
        load_coco(str(root), "test", 40, strict=True)


def test_coco_trains_and_evaluates(tmp_path):
    root = make_coco(tmp_path / "c", n=4)
    final = run_transfer(tiny("data.name=coco", f"data.root={root}", "train.epochs=1"), tmp_path / "r", progress=False)
    assert 0 <= final["map_50"] <= 100
