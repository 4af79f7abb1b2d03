"""The recipes shipped inside the package: found by name as well as by path (an existing file wins, then
GROUP/NAME among the shipped ones, else an error that suggests the closest names), in `--recipe`,
recipe.load and an ablation spec's `base:`, and listed by `bagoftricks recipes`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bagoftricks import ablate
from bagoftricks import recipe as brecipe
from bagoftricks.cli import main
from bagoftricks.errors import RecipeError, SpecError

REPO = Path(__file__).resolve().parent.parent


def test_repository_recipes_link_to_the_shipped_folder_and_every_yaml_is_named():
    """recipes/ in a clone is the package's folder, and every recipe in it (not the specs) has a name."""
    assert (REPO / "recipes").is_symlink() and (REPO / "recipes").resolve() == brecipe.shipped_folder().resolve()
    files = sorted(f"{p.parent.name}/{p.stem}" for p in (REPO / "recipes").glob("*/*.yaml")
                   if p.parent.name != brecipe.SPECS_GROUP)
    assert brecipe.shipped_recipes() == files and "fmnist/fast-3min" in files and len(files) >= 25


@pytest.mark.parametrize("name", ["fmnist/fast-3min", "fmnist/fast-3min.yaml"])
def test_a_shipped_name_with_or_without_yaml(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: only the name can find it
    assert brecipe.resolve_recipe_path(name) == brecipe.shipped_folder() / "fmnist" / "fast-3min.yaml"
    r = brecipe.load(name, ["train.epochs=6"])
    assert r.model.arch == "airbench" and r.model.stem == "whiten" and r.train.epochs == 6


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fmnist").mkdir()
    (tmp_path / "fmnist" / "fast-3min.yaml").write_text("model: {arch: resnet20, width: 4}\n")
    assert brecipe.load("fmnist/fast-3min.yaml").model.arch == "resnet20"  # the local file
    assert brecipe.load("fmnist/fast-3min").model.arch == "airbench"       # no such file: the shipped recipe
    assert brecipe.load(REPO / "recipes" / "fmnist" / "all.yaml") == brecipe.load("fmnist/all")


@pytest.mark.parametrize("given, close", [
    ("fmnist/fast3min", "fmnist/fast-3min"),
    ("recipes/fmnist/fast-3min.yaml", "fmnist/fast-3min"),  # a clone's path, outside the clone
    ("all", "fmnist/all"),                                   # the name without its group
])
def test_neither_file_nor_name_says_so_and_suggests(tmp_path, monkeypatch, given, close):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as e:
        brecipe.load(given)
    msg = str(e.value)
    assert repr(given) in msg and "neither a file nor a shipped recipe" in msg and close in msg, msg
    assert "did you mean" in msg and "\n" not in msg


def test_cli_takes_a_name_and_a_bad_one_is_exit_2_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "--recipe", "transfer/fmnist-detect"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["transfer"]["task"] == "detect"
    out = tmp_path / "run"
    assert main(["train", "--recipe", "fmnist/fast3min", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fmnist/fast-3min" in err and not out.exists(), err


def _spec(folder: Path, base) -> Path:
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump({"base": base, "ladder": ["only"]}))
    return p


def test_spec_base_by_name_and_a_file_beside_the_spec_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ablate.load_spec(_spec(tmp_path, "fmnist/baseline"))
    assert spec.base_dict == brecipe.to_dict(brecipe.load("fmnist/baseline"))
    spec = ablate.load_spec(_spec(tmp_path, {"recipe": "fmnist/08-resnet-d.yaml", "train": {"epochs": 2}}))
    assert spec.base_dict["model"]["variant"] == "D" and spec.base_dict["train"]["epochs"] == 2
    # a file of that name relative to the spec comes first
    (tmp_path / "abl" / "fmnist").mkdir(parents=True)
    (tmp_path / "abl" / "fmnist" / "baseline.yaml").write_text("model: {arch: resnet20, width: 4}\n")
    spec = ablate.load_spec(_spec(tmp_path / "abl", "fmnist/baseline.yaml"))
    assert spec.base_dict["model"]["width"] == 4
    # ...and a file relative to the working directory does not
    (tmp_path / "mine.yaml").write_text("model: {arch: resnet20}\n")
    with pytest.raises(SpecError, match=r"'mine.yaml' is neither a file \(relative to .*abl\) nor a shipped"):
        ablate.load_spec(_spec(tmp_path / "abl", "mine.yaml"))


def test_unknown_spec_base_suggests_a_shipped_name(tmp_path):
    with pytest.raises(SpecError) as e:
        ablate.load_spec(_spec(tmp_path, {"recipe": "fmnist/basline"}))
    assert "spec.yaml: base:" in str(e.value) and "did you mean fmnist/baseline" in str(e.value)


def test_shipped_specs_still_find_their_bases():
    for p in sorted((REPO / "recipes" / brecipe.SPECS_GROUP).glob("*.yaml")):
        assert ablate.load_spec(p).base_dict, p


def test_recipes_command_lists_every_name_with_its_own_summary(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = brecipe.shipped_recipes()
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[:len(names)]}
    assert list(rows) == names and "fmnist/fast-3min" in rows
    assert rows["fmnist/02-warmup"].startswith("Table 4: + linear warmup")  # the ladder's preamble skipped
    assert rows["fmnist/fast-3min"].startswith("Fashion-MNIST in 3 minutes")
    for group in {n.split("/")[0] for n in names}:  # within a group, no two recipes describe themselves alike
        mine = [s for n, s in rows.items() if n.startswith(group + "/")]
        assert len(set(mine)) == len(mine) and all(mine), group
    assert main(["recipes", "--json"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["name"] for o in objs] == names
    fast = next(o for o in objs if o["name"] == "fmnist/fast-3min")
    assert Path(fast["path"]).is_file() and fast["summary"] == rows["fmnist/fast-3min"]
    assert fast["header"][0].startswith("Fashion-MNIST in 3 minutes")


def test_recipes_and_show_by_name_import_no_torch():
    code = """if True:
        import contextlib, io, sys
        from bagoftricks.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(['recipes']) == 0 and main(['show', '--recipe', 'fmnist/all']) == 0
        assert 'fmnist/fast-3min' in out.getvalue()
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))
        assert not heavy, heavy[:5]
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_shipped_ablation_spec_loads_by_name(tmp_path, monkeypatch):
    from bagoftricks.ablate.spec import load_spec
    from bagoftricks.errors import SpecError
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    spec = load_spec("ablations/fmnist-table6")
    assert spec.name and len(spec.steps) > 3
    assert load_spec("ablations/fmnist-table6.yaml").name == spec.name
    with pytest.raises(SpecError, match="did you mean ablations/fmnist-table6"):
        load_spec("ablations/fmnist-tabel6")


AIRBENCH_FOUR = {"model.dirac", "model.stem_bias_epochs", "data.jitter", "schedule.kind", "schedule.floor",
                 "tricks.warmup_epochs"}


def test_fast_3min_is_its_first_form_with_airbench_s_four_settings_and_a_budget():
    """fast-3min.yaml = fast-3min-cosine.yaml (what the fmnist-airbench sweep and the optimizer pages measured)
    + the four settings that gained there, sized by a 3-minute budget and evaluated once at the end; the
    sweep's last row is exactly those four on that base."""
    new, old = brecipe.load("fmnist/fast-3min"), brecipe.load("fmnist/fast-3min-cosine")
    assert {k for k, *_ in brecipe.diff(old, new)} == AIRBENCH_FOUR | {"train.budget", "train.eval_every"}
    assert new.train.budget == "3min" and not old.train.budget and old.train.epochs == new.train.epochs == 5
    spec = ablate.load_spec("ablations/fmnist-airbench")
    four = next(c for c in ablate.expand(spec, "out", seeds=(0,)) if c.step.name.startswith("the four"))
    measured = ablate.cell_recipe(spec, four)
    assert brecipe.diff(measured, new, ignore=("train.seed", "train.budget", "train.eval_every")) == []
    for name in ("fmnist-airbench", "optimizers-tune", "optimizers-fast3min", "optimizers-batch",
                 "optimizers-batch-tune"):   # their pages measured the first form; their specs still train it
        s = ablate.load_spec(f"ablations/{name}")
        assert brecipe.diff(brecipe.from_dict(s.base_dict), old) == [], name
