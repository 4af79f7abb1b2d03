"""benchmarks/budget_figure.py on a run folder written here: the length it draws is the start's choice and each
re-size at its second, to the run's end; the lr is the recorded recipe's, step by step; the figure is drawn, and a
folder without a budget is refused by name."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bagoftricks import recipe
from bagoftricks.engine import derive

REPO = Path(__file__).resolve().parent.parent
BASE = ["data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
        "model.arch=resnet8", "model.width=4", "train.batch_size=16", "train.device=cpu", "schedule.kind=linear",
        "tricks.warmup_epochs=1"]


def _script():
    spec = importlib.util.spec_from_file_location("budget_figure_bench", REPO / "benchmarks" / "budget_figure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _folder(tmp_path: Path) -> tuple[Path, recipe.Recipe]:
    r = recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*BASE, "train.steps=30", "train.resized_at=[6, 16]",
                                                                 "train.resized_from=[40, 24]"]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipe.dump(r))
    resized = [{"elapsed": 5.0, "steps": 24}, {"elapsed": 9.5, "steps": 30}]
    (run / "env.json").write_text(json.dumps({"steps_per_epoch": 4, "steps": 30, "budget": {
        "budget_seconds": 12.0, "spent_before_run": 1.5, "steps": 40, "resized": resized}}))
    (run / "final.json").write_text(json.dumps({"val_top1": 50.0, "wall_seconds": 10.0, "budget_spent": 11.2}))
    return run, r


def test_the_length_and_the_lr_are_the_run_s_and_the_figure_is_drawn(tmp_path):
    script = _script()
    run, r = _folder(tmp_path)
    got = script.read_run(run)
    assert (got["seconds"], got["steps"], got["end"], got["budget"]) == ([1.5, 5.0, 9.5], [40, 24, 30], 11.2, 12.0)
    assert got["lr"] == [derive.scheduled_lr(r, k, 4) for k in range(30)] and got["lr"][-1] == 0.0
    assert got["epochs"] == [k / 4 for k in range(30)]
    assert script.main([str(run), "--out", str(tmp_path / "f.png"), "--mark", "4", "slower"]) == 0
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_budget_is_refused_by_name(tmp_path):
    run, _ = _folder(tmp_path)
    (run / "env.json").write_text(json.dumps({"steps_per_epoch": 4, "steps": 30}))
    with pytest.raises(SystemExit, match="env.json has no \"budget\""):
        _script().read_run(run)
