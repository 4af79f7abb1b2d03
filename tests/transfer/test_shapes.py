"""The shapes folder (benchmarks/shapes_folder.py): VOC and ADE20K layouts of the same images, custom class
names, boxes that hold their shapes' pixels; it trains in both layouts, and its skipped samples are reported."""
import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bagoftricks.transfer.loop import run_transfer
from tests.transfer.conftest import tiny

REPO = Path(__file__).resolve().parents[2]


def _shapes():
    spec = importlib.util.spec_from_file_location("shapes_folder", REPO / "benchmarks" / "shapes_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _shapes()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shapes.write_folder(tmp_path_factory.mktemp("shapes"), train=8, test=4, size=(40, 56))


def test_the_same_images_in_both_layouts_with_boxes_around_their_shapes(folder, tmp_path):
    voc = folder["voc"] / "VOC2012"
    ids = (voc / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert ids == (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split() and len(ids) == 8
    for name in ids:
        ade = folder["ade20k"]
        assert (voc / "JPEGImages" / f"{name}.jpg").read_bytes() == \
            (ade / "images" / "training" / f"{name}.jpg").read_bytes()
        labels = np.asarray(Image.open(ade / "annotations" / "training" / f"{name}.png")).astype(int) - 1
        voc_map = np.asarray(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        assert ((voc_map == labels) | (voc_map == 255)).all() and labels.min() >= 0
        for obj in ET.parse(voc / "Annotations" / f"{name}.xml").getroot().iter("object"):
            k = shapes.CLASSES.index(obj.findtext("name")) + 1
            x1, y1, x2, y2 = (int(obj.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            inside = np.zeros(labels.shape, bool)
            inside[y1 - 1:y2, x1 - 1:x2] = True
            assert (labels[inside] == k).any()               # the box holds pixels of its class
    again = shapes.write_folder(tmp_path / "again", train=8, test=4, size=(40, 56))   # the same folder again
    first = (voc / "Annotations" / f"{ids[0]}.xml").read_text()
    assert (again["voc"] / "VOC2012" / "Annotations" / f"{ids[0]}.xml").read_text() == first


def test_shapes_folder_trains_in_both_layouts(folder, tmp_path):
    det = run_transfer(tiny("data.name=voc", f"data.root={folder['voc']}", "data.image_size=40", "train.epochs=1"),
                       tmp_path / "det", progress=False)
    assert 0 <= det["map_50"] <= 100
    classes = json.loads((tmp_path / "det" / "classes.json").read_text())
    assert classes == ["background", *sorted(shapes.CLASSES)]          # the annotations' own names
    seg = run_transfer(tiny("data.name=ade20k", f"data.root={folder['ade20k']}", "transfer.task=segment",
                            "train.epochs=1"), tmp_path / "seg", progress=False)
    assert 0 <= seg["miou"] <= 100
    seg_classes = json.loads((tmp_path / "seg" / "classes.json").read_text())
    assert seg_classes == ["unlabelled", *(f"class {k}" for k in range(1, 7))]   # 6 labels: a head of 7, not 151
    other = shapes.write_folder(tmp_path / "other", train=8, test=4, size=(40, 56), seed=1)   # data.root is read
    log = (tmp_path / "det" / "run.log").read_text()
    assert "(8 train, 4 test, 6 classes with the background)" in log
    run_transfer(tiny("data.name=voc", f"data.root={other['voc']}", "data.image_size=40", "train.epochs=1"),
                 tmp_path / "det2", progress=False)
    assert (tmp_path / "det2" / "metrics.jsonl").read_text() != (tmp_path / "det" / "metrics.jsonl").read_text()


def test_skipped_samples_are_logged_and_listed(tmp_path, capsys):
    paths = shapes.write_folder(tmp_path / "f", train=8, test=4, size=(40, 56))
    voc = paths["voc"] / "VOC2012"
    ids = (voc / "ImageSets" / "Main" / "train.txt").read_text().split()
    (voc / "Annotations" / f"{ids[1]}.xml").write_text("<annotation><object>")      # malformed
    (voc / "JPEGImages" / f"{ids[2]}.jpg").unlink()                                 # an annotation without image
    out = tmp_path / "run"
    run_transfer(tiny("data.name=voc", f"data.root={paths['voc']}", "data.image_size=40", "train.epochs=1"), out,
                 progress=False)
    line = next(x for x in (out / "run.log").read_text().splitlines() if x.startswith("warning: skipped"))
    assert line.startswith("warning: skipped 2 train sample(s) (all in skipped.json")
    assert f"{ids[1]}.xml: malformed XML" in line and f"{ids[2]}.xml: {voc / 'JPEGImages'}" in line
    assert line in capsys.readouterr().err
    recs = json.loads((out / "skipped.json").read_text())
    names = [(r["split"], Path(r["file"]).name) for r in recs]
    assert names == [("train", f"{ids[1]}.xml"), ("train", f"{ids[2]}.xml")]
    assert recs[1]["reason"].endswith(f"{ids[2]}.jpg: image not found")
    assert json.loads((out / "env.json").read_text())["skipped_files"] == 2
