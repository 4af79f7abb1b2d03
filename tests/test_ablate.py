"""`bagoftricks ablate`: spec parsing and expansion, run naming, validation before anything runs, and one
small real sweep (subprocesses, --jobs 2) that resumes a partial cell, records a failing one and exits 1,
then skips its finished cells on a second run without touching their files."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from bagoftricks import ablate
from bagoftricks.ablate.launchers import available_cores, job_env
from bagoftricks.ablate.spec import select_steps, slugify
from bagoftricks.ablate.sweep import train_command
from bagoftricks import recipe as brecipe
from bagoftricks.cli import main

REPO = Path(__file__).resolve().parent.parent

TINY_BASE = {
    "model": {"arch": "resnet20", "width": 4},
    "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "small"},
    "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
}


def write_spec(tmp_path: Path, body: dict, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------- expansion
def test_ladder_is_cumulative_and_later_values_win(tmp_path):
    spec = ablate.parse_spec({
        "base": TINY_BASE, "set": {"optim.weight_decay": 0.0005}, "seeds": 2,
        "ladder": [{"name": "baseline"},
                   {"name": "+ linear scaling (4x batch)",
                    "set": {"train.batch_size": 64, "tricks.linear_scaling": True}},
                   {"name": "+ warmup", "set": {"tricks.warmup_epochs": 0.5}},
                   {"name": "+ zero γ", "set": {"tricks.zero_gamma": True, "train.batch_size": 16}}]})
    assert [s.overrides for s in spec.steps] == [
        (),
        ("train.batch_size=64", "tricks.linear_scaling=true"),
        ("train.batch_size=64", "tricks.linear_scaling=true", "tricks.warmup_epochs=0.5"),
        ("train.batch_size=16", "tricks.linear_scaling=true", "tricks.warmup_epochs=0.5", "tricks.zero_gamma=true"),
    ]
    cells = ablate.expand(spec, tmp_path / "out")
    assert [c.key for c in cells] == [
        "00-baseline/seed0", "00-baseline/seed1",
        "01-linear-scaling-4x-batch/seed0", "01-linear-scaling-4x-batch/seed1",
        "02-warmup/seed0", "02-warmup/seed1", "03-zero-gamma/seed0", "03-zero-gamma/seed1"]
    r = ablate.cell_recipe(spec, cells[-1])
    got = (r.train.batch_size, r.tricks.linear_scaling, r.tricks.warmup_epochs, r.tricks.zero_gamma)
    assert got == (16, True, 0.5, True)
    assert (r.optim.weight_decay, r.train.seed, r.model.width) == (0.0005, 1, 4)
    assert cells[-1].rel_dir == "runs/03-zero-gamma/seed1"


def test_grid_alternatives_apply_to_the_base_alone(tmp_path):
    spec = ablate.parse_spec({"base": TINY_BASE, "seeds": [3, 7], "grid": [
        {"name": "A", "set": {"model.variant": "A"}}, {"name": "D", "set": {"model.variant": "D"}},
        {"name": "cosine", "set": ["schedule.kind=cosine"]}]})
    cells = ablate.expand(spec, tmp_path / "out")
    assert [c.key for c in cells] == ["00-a/seed3", "00-a/seed7", "01-d/seed3", "01-d/seed7",
                                      "02-cosine/seed3", "02-cosine/seed7"]
    r = ablate.cell_recipe(spec, cells[-1])
    assert r.model.variant == "A" and r.schedule.kind == "cosine" and r.train.seed == 7  # D did not leak
    assert [c.seed for c in ablate.expand(spec, tmp_path / "out", seeds=(0,))] == [0, 0, 0]


def test_run_names_are_stable_slugs():
    assert slugify("+ linear scaling (4x batch)") == "linear-scaling-4x-batch"
    assert slugify("+ zero γ") == "zero-gamma"
    assert slugify("ResNet-D") == "resnet-d"
    assert slugify("+++") == "step"
    a = ablate.parse_spec({"base": TINY_BASE, "ladder": ["baseline", "+ mixup (α=0.2)"]})
    b = ablate.parse_spec({"base": TINY_BASE, "ladder": ["baseline", "+ mixup (α=0.2)"]})
    assert [s.folder for s in a.steps] == [s.folder for s in b.steps] == ["00-baseline", "01-mixup-alpha-0-2"]


@pytest.mark.parametrize("key, value", [
    ("train.compile", "step"), ("optim.nesterov", False), ("optim.weight_decay", 0.1), ("optim.lr", 1e30),
    ("train.epochs", 3), ("train.device", "cpu"), ("tricks.distill_teacher", "true"),
    ("tricks.distill_teacher", ""), ("tricks.distill_teacher", "a b: c"), ("schedule.milestones", [2, 3.5])])
def test_override_values_round_trip(key, value):
    spec = ablate.parse_spec({"ladder": [{"name": "x", "set": {key: value}}]})
    (item,) = spec.steps[0].overrides
    r = brecipe.apply_overrides(brecipe.Recipe(), [item])
    got = getattr(getattr(r, key.split(".")[0]), key.split(".")[1])
    assert got == (tuple(value) if isinstance(value, list) else value)


def test_base_file_relative_to_spec_plus_inline(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "b.yaml").write_text(yaml.safe_dump(TINY_BASE))
    (tmp_path / "abl").mkdir()
    p = write_spec(tmp_path / "abl", {"base": {"recipe": "../recipes/b.yaml", "train": {"epochs": 1}},
                                      "ladder": ["only"]})
    spec = ablate.load_spec(p)
    assert spec.base_dict["model"]["width"] == 4 and spec.base_dict["train"]["epochs"] == 1
    assert spec.seeds == (0, 1, 2) and spec.name == "spec"


@pytest.mark.parametrize("body, words", [
    ({"ladder": ["a"], "grid": ["b"]}, ["exactly one"]),
    ({"ladder": ["a"], "seed": 3}, ["unknown key 'seed'", "seeds"]),
    ({"ladder": [{"name": "a", "sett": {}}]}, ["unknown key 'sett'"]),
    ({"ladder": ["a", "a"]}, ["used twice"]),
    ({"ladder": [{"name": "a", "set": {"optim.lrr": 1}}]}, ["optim.lrr", "optim.lr", "'a'"]),
    ({"ladder": [{"name": "warm", "set": {"tricks.warmup_epochs": -1}}]}, ["tricks.warmup_epochs", "'warm'"]),
    ({"ladder": [{"name": "a", "set": {"tricks.distill_teacher": "{teacher}"}}]}, ["teacher"]),
    ({"base": "nope.yaml", "ladder": ["a"]}, ["nope.yaml"]),
    ({"ladder": ["a"], "seeds": 0}, ["seeds"]),
])
def test_bad_spec_exit_2_names_the_key_and_writes_nothing(tmp_path, capsys, body, words):
    p = write_spec(tmp_path, body)
    out = tmp_path / "out"
    assert main(["ablate", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, capsys):
    p = write_spec(tmp_path, {"base": TINY_BASE, "seeds": 3, "ladder": ["a", {"name": "b", "set": {"optim.lr": 0.2}}]})
    out = tmp_path / "out"
    assert main(["ablate", str(p), "--out", str(out), "--dry-run", "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 cells" in text and "01-b/seed1" in text and "optim.lr=0.2" in text and "seed2" not in text
    assert not out.exists()


def test_folder_of_a_different_recipe_is_refused(tmp_path):
    spec = ablate.parse_spec({"base": TINY_BASE, "seeds": 1, "ladder": ["a"]})
    out = tmp_path / "out"
    d = out / "runs" / "00-a" / "seed0"
    d.mkdir(parents=True)
    other = brecipe.apply_overrides(ablate.cell_recipe(spec, ablate.expand(spec, out)[0]), ["optim.lr=0.5"])
    (d / "recipe.yaml").write_text(brecipe.dump(other))
    with pytest.raises(ablate.SpecError, match="optim.lr"):
        ablate.run_sweep(spec, out, dry_run=True, echo=lambda s: None)
    # threads (set by --jobs) are not part of what a cell trains
    (d / "recipe.yaml").write_text(brecipe.dump(brecipe.apply_overrides(other, ["optim.lr=0.1", "train.threads=7"])))
    assert ablate.run_sweep(spec, out, dry_run=True, echo=lambda s: None) == 0


def test_a_budgeted_cell_is_its_sized_run_and_another_budget_is_refused(tmp_path):
    # a budgeted run records the steps its budget chose (and no budget) in recipe.yaml, the budget in env.json:
    # a second `ablate` over the finished sweep skips the cell; a spec with another budget does not take it
    spec = ablate.parse_spec({"base": TINY_BASE, "set": {"train.budget": "25s"}, "seeds": 1, "ladder": ["a"]})
    out = tmp_path / "out"
    d = out / "runs" / "00-a" / "seed0"
    d.mkdir(parents=True)
    want = ablate.cell_recipe(spec, ablate.expand(spec, out)[0])
    (d / "recipe.yaml").write_text(brecipe.dump(brecipe.apply_overrides(want, ["train.budget=", "train.steps=216"])))
    (d / "env.json").write_text(json.dumps({"budget": {"budget": "25", "steps": 216}}))
    assert ablate.run_sweep(spec, out, dry_run=True, echo=lambda s: None) == 0  # 25 s as "25" or "25s"
    (d / "env.json").write_text(json.dumps({"budget": {"budget": "26s", "steps": 216}}))
    with pytest.raises(ablate.SpecError, match=r"train.budget: '26s' in the folder, '25s' in the spec"):
        ablate.run_sweep(spec, out, dry_run=True, echo=lambda s: None)
    (d / "env.json").write_text("{}")  # a run of a fixed length: its train.steps is not what a budget asks
    with pytest.raises(ablate.SpecError, match="train.steps: 216 in the folder"):
        ablate.run_sweep(spec, out, dry_run=True, echo=lambda s: None)


SMOOTHED = {**TINY_BASE, "tricks": {"label_smoothing": 0.1}}  # a base that already smooths, as fmnist/all.yaml


def test_a_step_that_changes_nothing_is_refused_before_anything_is_written(tmp_path, capsys):
    """`+ label smoothing` on a base that already smooths with 0.1 would train the row above's cells again."""
    p = write_spec(tmp_path, {"base": SMOOTHED, "ladder": [
        "baseline", {"name": "+ label smoothing", "set": {"tricks.label_smoothing": 0.1}},
        {"name": "+ cosine", "set": {"schedule.kind": "cosine"}}]})
    out = tmp_path / "out"
    assert main(["ablate", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists(), err
    assert (f"error: {p}: step 1 '+ label smoothing' changes nothing: it trains the recipe of step 0 'baseline' "
            f"(it sets tricks.label_smoothing=0.1, which that step already has); ") in err
    assert "--allow-unchanged to run it anyway" in err and "cosine" not in err
    assert main(["ablate", str(p), "--out", str(out), "--dry-run"]) == 2 and not out.exists()
    # --only a step that changes something runs; --allow-unchanged runs the step with a warning
    assert main(["ablate", str(p), "--out", str(out), "--dry-run", "--only", "0,2"]) == 0
    capsys.readouterr()
    assert main(["ablate", str(p), "--out", str(out), "--dry-run", "--allow-unchanged"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.startswith("warning:")] == [
        "warning: step 1 '+ label smoothing' changes nothing: it trains the recipe of step 0 'baseline' (it sets "
        "tricks.label_smoothing=0.1, which that step already has); running it anyway (--allow-unchanged)"]
    assert any("01-label-smoothing/seed0" in ln for ln in lines) and not out.exists()


def test_unchanged_steps_of_ladders_and_grids(tmp_path):
    from bagoftricks.ablate.sweep import unchanged_steps

    def found(body: dict, extra: tuple[str, ...] = ()) -> list[tuple[int, int]]:
        spec = ablate.parse_spec({"base": TINY_BASE, **body})
        return [(s.index, o.index) for s, o in unchanged_steps(spec, ablate.expand(spec, tmp_path, extra=extra))]

    lr = {"name": "lr", "set": {"optim.lr": 0.2}}
    # ladder: each row against the row above only; a row that sets nothing, or only what ablate replaces
    ladder = ["a", lr, {"name": "same lr", "set": {"optim.lr": 0.2}}, "nothing",
              {"name": "threads", "set": {"train.threads": 3}}, {"name": "back", "set": ["optim.lr=0.1"]}]
    assert found({"ladder": ladder}) == [(2, 1), (3, 2), (4, 3)]
    assert found({"ladder": ["a", lr]}) == [] and found({"ladder": ["a", lr]}, ("optim.lr=0.3",)) == [(1, 0)]
    # grid: each row against every earlier row; the first row may equal the bare base recipe
    assert found({"grid": [{"name": "A", "set": {"model.variant": "A"}}, {"name": "D", "set": {"model.variant": "D"}},
                           "plain", {"name": "D again", "set": ["model.variant=D"]}]}) == [(2, 0), (3, 1)]
    assert found({"grid": [{"name": "A", "set": {"model.variant": "A"}}, {"name": "D", "set": {"model.variant": "D"}}]}
                 ) == []


def test_allow_unchanged_is_recorded_in_the_command():
    import argparse

    from bagoftricks.ablate.cli import _argv, add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert _argv(p.parse_args(["s.yaml", "--out", "o", "--allow-unchanged"]))[-1] == "--allow-unchanged"
    assert "--allow-unchanged" not in _argv(p.parse_args(["s.yaml", "--out", "o"]))


def test_only_selects_steps():
    spec = ablate.parse_spec({"base": TINY_BASE, "ladder": ["a", "+ b", "+ c"]})
    assert select_steps(spec, ["0", "c"]) == {0, 2}
    assert select_steps(spec, ["01-b"]) == {1}
    with pytest.raises(ablate.SpecError, match="no step 'z'"):
        select_steps(spec, ["z"])


@pytest.mark.parametrize("name", ["fmnist-table3", "fmnist-table4", "fmnist-table5", "fmnist-table6"])
def test_shipped_specs_expand_and_validate(tmp_path, name):
    spec = ablate.load_spec(REPO / "recipes" / "ablations" / f"{name}.yaml")
    cells = ablate.expand(spec, tmp_path / "out")
    assert len(spec.seeds) >= 3 and len([c for c in cells if not c.is_teacher]) == len(spec.steps) * len(spec.seeds)
    recipes = [ablate.cell_recipe(spec, c) for c in cells]
    assert all(r.data.name == "fashion_mnist" for r in recipes)
    # the scale rule: every cell (and the teacher) trains at least 1,500 optimizer steps
    steps = [(r.data.train_limit or 60000) // r.train.batch_size * r.train.epochs for r in recipes]
    assert min(steps) >= 1500, dict(zip((c.key for c in cells), steps))
    last = {c.step.index: r for c, r in zip(cells, recipes) if not c.is_teacher}
    if name == "fmnist-table3":
        assert (last[0].train.batch_size, last[0].train.precision) == (32, "fp32")
        assert (last[1].train.batch_size, last[1].train.precision) == (128, "bf16")
    if name == "fmnist-table4":
        assert last[0].train.batch_size * 4 == last[1].train.batch_size and last[5].train.precision == "bf16"
    if name == "fmnist-table5":
        assert [last[i].model.variant for i in range(4)] == ["A", "B", "C", "D"]
    if name == "fmnist-table6":
        teacher_dir = str((tmp_path / "out").resolve() / "runs" / "teacher")
        assert cells[0].is_teacher and recipes[0].model.arch == "resnet56"
        assert last[3].tricks.distill_teacher == teacher_dir and last[4].tricks.distill_teacher == ""
        assert last[4].tricks.mixup_alpha == 0.2 and last[5].tricks.distill_teacher == teacher_dir
        assert all(last[i].model.variant == "D" for i in range(6))


# ------------------------------------------------------------------------------------ a real sweep
def _tree_mtimes(d: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(d.rglob("*"))}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """base -> + cosine (left partial beforehand) -> + diverge, one seed, --jobs 2."""
    from bagoftricks.engine import train
    from bagoftricks.errors import TrainingInterrupted
    tmp = tmp_path_factory.mktemp("ablate")
    p = write_spec(tmp, {"name": "tiny", "base": TINY_BASE, "seeds": [0], "ladder": [
        {"name": "baseline"},
        {"name": "+ cosine", "set": {"schedule.kind": "cosine"}},
        {"name": "+ diverge", "set": {"optim.lr": 1e30, "train.max_bad_steps": 1}}]})
    out = tmp / "out"
    spec = ablate.load_spec(p)
    partial = ablate.expand(spec, out)[1]
    assert partial.key == "01-cosine/seed0"
    with pytest.raises(TrainingInterrupted):  # a run stopped after its first step, with a checkpoint
        train(ablate.cell_recipe(spec, partial), out / partial.rel_dir, progress=False, stop_after_steps=1)
    assert not (out / partial.rel_dir / "final.json").exists()
    lines: list[str] = []
    code = ablate.run_sweep(spec, out, jobs=2, echo=lines.append)
    return {"spec": spec, "out": out, "code": code, "lines": lines, "path": p}


def test_sweep_records_failure_and_exits_1(sweep):
    out = sweep["out"]
    assert sweep["code"] == 1
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    by = {r["cell"]: r for r in recs}
    assert len(recs) == 3 and set(by) == {"00-baseline/seed0", "01-cosine/seed0", "02-diverge/seed0"}
    assert by["00-baseline/seed0"]["status"] == by["01-cosine/seed0"]["status"] == "ok"
    bad = by["02-diverge/seed0"]
    assert bad["status"] == "failed" and bad["exit_code"] == 1 and "NonFiniteLoss" in bad["reason"]
    assert bad["overrides"] == ["schedule.kind=cosine", "optim.lr=1e+30", "train.max_bad_steps=1", "train.seed=0"]
    ok = by["00-baseline/seed0"]
    for k in ("val_top1", "val_top5", "best_val_top1", "images_per_sec", "seconds_per_epoch", "wall_seconds",
              "params", "macs"):
        assert isinstance(ok[k], (int, float)) and ok[k] >= 0, k
    assert ok["run_dir"] == "runs/00-baseline/seed0" and ok["step"] == "baseline" and ok["index"] == 0
    final = json.loads((out / "runs/00-baseline/seed0/final.json").read_text())
    assert ok["val_top1"] == final["val_top1"]
    plan = json.loads((out / "cells.json").read_text())
    assert [c["cell"] for c in plan["cells"]] == sorted(by)
    assert plan["cells"][2]["overrides"] == bad["overrides"] and "--set optim.lr=1e+30" in plan["cells"][2]["command"]
    assert any("failed" in ln and "02-diverge/seed0" in ln and "NonFiniteLoss" in ln for ln in sweep["lines"])


def test_partial_cell_was_resumed(sweep):
    d = sweep["out"] / "runs/01-cosine/seed0"
    assert "resumed from" in (d / "run.log").read_text()
    assert json.loads((d / "final.json").read_text())["epoch"] == 2
    assert [json.loads(ln)["epoch"] for ln in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(list((d / "checkpoints").glob("step-*.pt"))) >= 1
    assert any("start" in ln and "01-cosine/seed0 (resume)" in ln for ln in sweep["lines"])


def test_jobs_2_runs_cells_side_by_side_with_fair_threads(sweep):
    lines = sweep["lines"]
    first_end = next(i for i, ln in enumerate(lines) if re.match(r"\[\d+/\d+\] (ok|failed)", ln))
    assert sum(1 for ln in lines[:first_end] if "] start" in ln) == 2
    threads = max(1, available_cores() // 2)
    env = json.loads((sweep["out"] / "runs/00-baseline/seed0/env.json").read_text())
    assert f"train.threads={threads}" in env["argv"]


def test_second_run_skips_finished_cells_untouched(sweep):
    out = sweep["out"]
    before = {k: v for k, v in _tree_mtimes(out / "runs").items() if "diverge" not in k}
    results_before = (out / "results.jsonl").read_text()
    lines: list[str] = []
    code = ablate.run_sweep(sweep["spec"], out, jobs=2, echo=lines.append)
    assert code == 1  # the failed cell is kept (not retried) and still counts
    assert not any("] start" in ln for ln in lines)
    after = {k: v for k, v in _tree_mtimes(out / "runs").items() if "diverge" not in k}
    assert after == before
    assert (out / "results.jsonl").read_text() == results_before
    # --retry-failed starts the failed cell afresh, keeping the old attempt aside
    lines.clear()
    assert ablate.run_sweep(sweep["spec"], out, jobs=2, retry_failed=True, echo=lines.append) == 1
    assert (out / "runs/02-diverge/seed0.failed-1/stderr.log").is_file()
    assert sum(1 for ln in lines if "] start" in ln) == 1
    assert {k: v for k, v in _tree_mtimes(out / "runs").items() if "diverge" not in k} == before


def test_job_env_shares_cores_and_gives_one_gpu_per_job():
    env = job_env(3, 4, ["0", "1"], base={"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    assert "CUDA_VISIBLE_DEVICES" not in job_env(0, 1, [], base={})
    assert Path(env["PYTHONPATH"].split(os.pathsep)[0], "bagoftricks", "ablate", "__init__.py").is_file()
    spec = ablate.parse_spec({"base": TINY_BASE, "ladder": ["a"]})
    (cell,) = ablate.expand(spec, "out", seeds=(0,))
    cmd = train_command(Path("out"), cell, 4, resume=False, python="py")
    assert cmd[:5] == ["py", "-m", "bagoftricks", "train", "--recipe"] and "train.threads=4" in cmd
    assert train_command(Path("out"), cell, 4, resume=True, python="py")[3:5] == ["train", "--resume"]


def test_fast_spec_runs_from_all_fast_to_fast_3min_as_first_shipped(tmp_path):
    spec = ablate.load_spec(REPO / "recipes" / "ablations" / "fmnist-fast.yaml")
    cells = ablate.expand(spec, tmp_path / "out")
    assert len(cells) == len(spec.steps) * 3 >= 3 * 6
    rows = {c.step.index: ablate.cell_recipe(spec, c) for c in cells if c.seed == 0}
    fmnist = REPO / "recipes" / "fmnist"
    same = lambda a, b, *ign: brecipe.diff(a, brecipe.load(fmnist / b), ignore=("train.seed", *ign))  # noqa: E731
    assert same(rows[len(rows) - 1], "fast-3min-cosine.yaml") == []
    # every row evaluates as fast-3min.yaml does (once, plainly and with flip TTA): no trained weight changes
    assert same(rows[0], "all-fast.yaml", "tricks.tta", "train.eval_every") == []
    assert {(r.tricks.tta, r.train.eval_every) for r in rows.values()} == {("flip", 5)}
    changed = [{k for k, *_ in brecipe.diff(rows[i - 1], rows[i])} for i in range(1, len(rows))]
    assert {"model.stem"} in changed and {"data.flip_mode"} in changed and {"tricks.lookahead_every"} in changed
