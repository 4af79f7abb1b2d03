"""predict: top-k for every good image of a mixed folder, every bad one named, exit codes, formats."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bagoftricks.data.images import LUMA
from bagoftricks.cli import main
from bagoftricks.deploy import images, predict
from bagoftricks.engine import load_model


def _png(path, size, seed):
    arr = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "imgs"
    good = [_png(root / "a.png", (20, 16), 0), _png(root / "sub" / "b.png", (16, 16), 1)]
    Image.open(good[0]).convert("RGB").save(root / "c.jpg", quality=90)
    good.append(root / "c.jpg")
    (root / "empty.jpg").write_bytes(b"")
    full = (root / "a.png").read_bytes()
    (root / "cut.png").write_bytes(full[: len(full) // 2])
    (root / "junk.png").write_bytes(b"this is not an image")
    (root / "notes.txt").write_text("not listed: not an image extension")
    _png(root / ".hidden" / "h.png", (8, 8), 2)
    return root, good


def test_a_mixed_folder(small_run, mixed, capsys):
    root, good = mixed
    code = main(["predict", "--checkpoint", str(small_run), str(root), "--topk", "2", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sorted(p["path"] for p in out["predictions"]) == sorted(map(str, good))
    assert {e["path"].rsplit("/", 1)[1] for e in out["errors"]} == {"empty.jpg", "cut.png", "junk.png"}
    assert all(e["reason"] for e in out["errors"])
    classes = [f"class_{k}" for k in range(4)]
    for p in out["predictions"]:
        assert len(p["top"]) == 2 and p["top"][0]["probability"] >= p["top"][1]["probability"]
        assert all(t["class"] == classes[t["index"]] for t in p["top"])


def test_probabilities_are_the_models_on_the_eval_transform(small_run, mixed):
    root, good = mixed
    preds, fails = predict.predict_files([str(good[0])], str(small_run), topk=4, device="cpu")
    lm = load_model(small_run)
    with torch.no_grad():
        want = lm.model(lm.transform(images.load_image(str(good[0]), 3))[None]).softmax(1)[0]
    got = {i: q for _, i, q in preds[0].top}
    assert not fails and all(abs(got[i] - want[i].item()) < 1e-5 for i in range(4))
    tta, _ = predict.predict_files([str(good[0])], str(small_run), topk=4, device="cpu", tta="flip")
    assert tta[0].top != preds[0].top


def test_nothing_predicted_is_exit_2_and_names_the_files(small_run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"")
    assert main(["predict", "--checkpoint", str(small_run), str(tmp_path / "bad.png"),
                 str(tmp_path / "missing.jpg")]) == 2
    out = capsys.readouterr().out
    assert "bad.png  error:" in out and "missing.jpg  error: not found" in out


def test_a_missing_checkpoint_is_exit_2(tmp_path, mixed, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "norun"), str(mixed[0])]) == 2
    assert "norun" in capsys.readouterr().err


def test_table_and_csv(small_run, mixed, capsys):
    root, good = mixed
    assert main(["predict", "--checkpoint", str(small_run), str(good[1]), str(root / "junk.png"), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{good[1]}  class_") and lines[0].count("%") == 3
    assert lines[1].startswith(f"{root / 'junk.png'}  error: ")
    assert main(["predict", "--checkpoint", str(small_run), str(good[1]), str(root / "junk.png"),
                 "--format", "csv", "--topk", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["rank"] for r in rows] == ["1", "2", ""] and rows[2]["error"]


def test_grey_models_get_grey_images(tmp_path):
    p = _png(tmp_path / "x.png", (5, 4), 3)
    rgb = images.load_image(str(p), 3)
    grey = images.load_image(str(p), 1)
    assert grey.shape == (1, 4, 5) and grey.dtype == torch.uint8
    w = torch.tensor(LUMA).view(3, 1, 1)
    assert torch.allclose(grey.float(), (rgb.float() * w).sum(0, keepdim=True), atol=0.51)


def test_bad_options(small_run, mixed, capsys):
    assert main(["predict", "--checkpoint", str(small_run), str(mixed[0]), "--topk", "0"]) == 2
    assert "--topk" in capsys.readouterr().err


def test_a_progress_bar_for_more_than_a_few_hundred_files():
    assert predict._bar(predict.PROGRESS_FROM, True) is None
    bar = predict._bar(predict.PROGRESS_FROM + 1, True)
    assert bar is not None and bar.total == predict.PROGRESS_FROM + 1
    bar.close()
    assert predict._bar(10_000, False) is None
