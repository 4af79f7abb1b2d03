"""benchmarks/eval_framing.py on a tiny run: its "whole" number is the run's own evaluation, its centre
crop is another framing of the same weights, and a bad ratio or run is an error with exit 2."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bagoftricks import recipe as brecipe
from bagoftricks.engine import train
from bagoftricks.engine.inference import evaluate_checkpoint

REPO = Path(__file__).resolve().parent.parent
TINY = {"model": {"arch": "resnet20", "width": 4},
        "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 128, "augment": "small",
                 "num_classes": 4},
        "optim": {"lr": 0.2},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"}}


def _script():
    spec = importlib.util.spec_from_file_location("eval_framing_bench", REPO / "benchmarks" / "eval_framing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_whole_is_the_runs_own_evaluation_and_the_crop_another_framing(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    train(brecipe.from_dict(TINY), run, progress=False)
    mod = _script()
    crops = []
    real = mod.bdata.EvalTransform

    def spy(size, crop_ratio, **kw):
        t = real(size, crop_ratio=crop_ratio, **kw)
        crops.append(t)
        return t

    monkeypatch.setattr(mod.bdata, "EvalTransform", spy)
    capsys.readouterr()
    assert mod.main([str(run), "--out", str(tmp_path / "f.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads((tmp_path / "f.json").read_text())
    assert res["whole_top1"] == evaluate_checkpoint(run, device="cpu")["top1"]
    assert res["image_size"] == 16 and res["crop_ratio"] == 0.875 and 0 <= res["crop_top1"] <= 100
    assert {t.resize_size for t in crops} == {16, round(16 / 0.875)}  # the run's own (whole) and 18 + crop 16


@pytest.mark.parametrize("args", [["--crop-ratio", "0"], []])
def test_bad_input_exits_2(tmp_path, capsys, args):
    run = tmp_path / "run"
    if args:
        train(brecipe.from_dict(TINY), run, progress=False)
    assert _script().main([str(run), *args]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("--crop-ratio" in err or str(run) in err)
