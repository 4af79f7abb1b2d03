"""Classification keeps the list of the image files it skipped too: a line per split in run.log, all of them
in skipped.json (the engine's run loop writes both for every task)."""
import json

from bagoftricks import recipe
from bagoftricks.engine import train
from bagoftricks.engine.runfolder import skipped_lines
from tests.imagefolders import write_png_folder


def test_imagefolder_run_lists_its_skipped_files(tmp_path):
    root = write_png_folder(tmp_path / "data", 4, 12)
    (root / "train" / "class0" / "empty.png").write_bytes(b"")
    (root / "val" / "class1" / "cut.png").write_bytes((root / "val" / "class1" / "0.png").read_bytes()[:40])
    r = recipe.validate(recipe.from_dict({
        "model": {"arch": "resnet20", "width": 4}, "data": {"name": "imagefolder", "root": str(root),
                                                             "image_size": 12, "augment": "none"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "threads": 1}}))
    train(r, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "run.log").read_text().splitlines()
    lines = [x for x in log if x.startswith("warning: skipped")]
    assert len(lines) == 2 and "1 train sample(s)" in lines[0] and "empty.png: empty file" in lines[0]
    assert "1 test sample(s)" in lines[1] and "cut.png: " in lines[1]
    recs = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert [(x["split"], x["file"]) for x in recs] == [("train", str(root / "train" / "class0" / "empty.png")),
                                                        ("test", str(root / "val" / "class1" / "cut.png"))]


def test_a_line_names_the_first_three_and_counts_the_rest():
    skipped = [("train", f"/d/{i}.jpg", f"/d/{i}.jpg: cannot decode") for i in range(5)]
    (line,) = skipped_lines(skipped)
    assert line.startswith("skipped 5 train sample(s)")
    assert line.endswith("0.jpg: cannot decode; 1.jpg: cannot decode; 2.jpg: cannot decode; and 2 more")
