"""The command line: exit codes (0 ok, 2 bad input, 1 other), one-line errors naming the field, and no
run folder left behind by a rejected command."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bagoftricks.cli import COMMANDS, build_parser, main
from bagoftricks.checkpoint import list_checkpoints
from bagoftricks.errors import TrainingInterrupted
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
    env = json.loads((out / "env.json").read_text())
    assert env["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability() and isinstance(env["cpu_flags"], list)
    before = (out / "metrics.jsonl").read_bytes()
    # a second train into the same folder is refused and leaves it untouched
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == before
    assert main(["eval", "--checkpoint", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    final = json.loads((out / "final.json").read_text())
    assert res["top1"] == pytest.approx(final["val_top1"]) and res["images"] > 0


def test_env_records_the_cpu_s_isa_flags_and_any_cap_on_them(monkeypatch):
    from bagoftricks.engine.runfolder import cpu_isa
    info = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\nprocessor\t: 1\n"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    rec = cpu_isa(info)
    assert rec["cpu_flags"] == ["amx_bf16", "avx512_bf16", "avx512f", "avx2"]
    assert rec["isa_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "ATEN_CPU_CAPABILITY" not in rec["isa_env"]
    assert cpu_isa("flags\t: fpu sse avx2\n")["cpu_flags"] == ["avx2"] and cpu_isa("")["cpu_flags"] == []


def test_exit_code_of_real_process(tmp_path):
    """The console entry point really exits 2 (not just returns it)."""
    p = subprocess.run([sys.executable, "-m", "bagoftricks", "train", "--set", "optim.lr=-1", "--out",
                        str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2 and "optim.lr" in p.stderr and not (tmp_path / "r").exists()


def _python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter on this checkout."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_help_version_show_and_every_command_help_import_no_torch():
    """The parser of every command is built from torch-free code, so these stay fast (timings:
    benchmarks/README.md)."""
    code = """if True:
        import contextlib, io, sys
        from bagoftricks.cli import COMMANDS, main
        def run(*argv):
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    code = main(list(argv))
                except SystemExit as e:
                    code = e.code
            assert code == 0, (argv, code)
            heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'matplotlib'))
            assert not heavy, (argv, heavy[:5])
            return out.getvalue()
        assert 'COMMAND' in run('--help')
        assert 'bagoftricks.ablate' not in sys.modules and 'bagoftricks.report' not in sys.modules
        assert run('--version').startswith('bagoftricks ')
        assert 'optim:' in run('show', '--set', 'optim.lr=0.2')
        for name in COMMANDS:
            assert 'usage: bagoftricks ' + name in run(name, '--help'), name
    """
    done = _python(code)
    assert done.returncode == 0, done.stderr


def test_every_command_and_option_has_a_help_line():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        assert COMMANDS[name].help
        for action in p._actions:
            assert action.help, f"bagoftricks {name} {action.option_strings or action.dest}: no help line"


def test_command_typo_suggests_and_debug_after_the_command(capsys):
    assert main(["trian", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "did you mean train" in err and err.count("\n") == 1
    assert main(["show", "--set", "optim.lr=x", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("error: optim.lr: expected a number, got 'x'")
    assert main(["flops", "--model", "resnet5O"]) == 2
    assert "(did you mean resnet56, resnet50" in capsys.readouterr().err


def test_epochs_message_names_the_field_the_user_set(tmp_path, capsys):
    r = tmp_path / "r.yaml"
    r.write_text("tricks: {warmup_epochs: 3}\ntrain: {epochs: 8}\n")
    for item, first in (("train.epochs=0", "train.epochs: must be > 0"),
                        ("train.epochs=2", "train.epochs: must be more than tricks.warmup_epochs (3)"),
                        ("schedule.milestones=abc", "schedule.milestones: expected a list of epochs")):
        assert main(["show", "--recipe", str(r), "--set", item]) == 2
        assert capsys.readouterr().err.startswith(f"error: {first}"), item


def _tiny_run(tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    return out


def test_checkpoint_errors_say_what_is_wrong_in_one_line(tmp_path, capsys):
    run = _tiny_run(tmp_path, capsys)
    text = tmp_path / "notes.pt"
    text.write_text("just some text\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    (only,) = list_checkpoints(run)  # a run folder whose only checkpoint is truncated
    only.write_bytes(only.read_bytes()[:3000])
    for path, words in ((text, f"{text} is not a checkpoint"), (empty, f"{empty} is empty (0 bytes)"),
                        (run, f"no valid checkpoint in run folder {run}: checkpoint {only} is truncated")):
        assert main(["eval", "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert "weights_only" not in err and "Warning" not in err and "falling back" not in err


def test_warnings_are_one_line_in_the_run_log(tmp_path, capsys, monkeypatch):
    import warnings

    from bagoftricks.engine import runfolder

    def tensorboard(path):
        warnings.warn("something a library says\nwith a second line", DeprecationWarning, stacklevel=1)
        return None
    monkeypatch.setattr(runfolder, "tensorboard", tensorboard)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["train", *TINY, "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    line = "warning: DeprecationWarning: something a library says"
    assert err.strip() == line, err
    assert line in (out / "run.log").read_text().splitlines()


def test_stop_prints_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    from bagoftricks import engine
    out = tmp_path / "run"

    def stopped(r, folder, **kw):
        raise TrainingInterrupted(2, Path(folder) / "checkpoints" / "step-000000003.pt", 3)
    monkeypatch.setattr(engine, "train", stopped)
    assert main(["train", *TINY, "--out", str(out)]) == 130
    assert f"to continue: bagoftricks train --resume {out}" in capsys.readouterr().err
