"""The command line: exit codes (0 ok, 2 bad input, 1 other), one-line errors naming the field, and no
run folder left behind by a rejected command."""
import json
import subprocess
import sys

import pytest

from bagoftricks.cli import main
from tests.test_recipe import INVALID

TINY = ["--set", "data.name=synthetic", "--set", "data.image_size=16", "--set", "data.synthetic_samples=64",
        "--set", "model.arch=resnet20", "--set", "model.width=4", "--set", "train.epochs=1",
        "--set", "train.batch_size=32", "--set", "data.augment=small", "--set", "train.device=cpu"]


@pytest.mark.parametrize("item, field", INVALID)
def test_invalid_value_exit_2_names_field_no_folder(tmp_path, capsys, item, field):
    out = tmp_path / "run"
    code = main(["train", *TINY, "--set", item, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert field in err and err.count("\n") == 1, err
    assert not out.exists()


def test_unknown_key_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "optim.lrr=1", "--out", str(out)]) == 2
    assert "did you mean optim.lr" in capsys.readouterr().err
    assert not out.exists()


def test_missing_recipe_file_exit_2(tmp_path, capsys):
    assert main(["show", "--recipe", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_missing_data_exit_2_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--set", "data.name=fashion_mnist", "--set", f"data.root={tmp_path / 'nodata'}",
                 "--set", "model.arch=resnet20", "--out", str(out)])
    assert code == 2
    assert "nodata" in capsys.readouterr().err
    assert not out.exists()


def test_show_prints_resolved_yaml(capsys):
    assert main(["show", "--set", "optim.lr=0.3", "--set", "tricks.mixup_alpha=0.2"]) == 0
    import yaml
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["optim"]["lr"] == 0.3 and d["tricks"]["mixup_alpha"] == 0.2 and d["model"]["arch"] == "resnet50"


def test_flops_resnet50_d(capsys):
    assert main(["flops", "--model", "resnet50", "--variant", "D", "--image-size", "224", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["macs"] == pytest.approx(4.33e9, rel=0.01) and d["params"] == pytest.approx(25.58e6, rel=0.01)


def test_flops_unknown_model_exit_2(capsys):
    assert main(["flops", "--model", "resnet51"]) == 2
    assert "resnet51" in capsys.readouterr().err


def test_train_then_eval_and_refuse_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test top-1" in printed and str(out) in printed
    for name in ("recipe.yaml", "env.json", "metrics.jsonl", "final.json", "checkpoints/latest"):
        assert (out / name).exists(), name
    before = (out / "metrics.jsonl").read_bytes()
    # a second train into the same folder is refused and leaves it untouched
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == before
    assert main(["eval", "--checkpoint", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    final = json.loads((out / "final.json").read_text())
    assert res["top1"] == pytest.approx(final["val_top1"]) and res["images"] > 0


def test_exit_code_of_real_process(tmp_path):
    """The console entry point really exits 2 (not just returns it)."""
    p = subprocess.run([sys.executable, "-m", "bagoftricks", "train", "--set", "optim.lr=-1", "--out",
                        str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2 and "optim.lr" in p.stderr and not (tmp_path / "r").exists()
