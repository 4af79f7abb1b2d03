"""Extending a finished run to more epochs: a new run folder whose recipe states the whole history, so
that training that recipe from scratch gives the same weights; the finished run is never touched."""
import pytest

from bagoftricks import recipe
from bagoftricks.cli import main
from bagoftricks.engine import extend_run, scheduled_lr, train
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.errors import TrainingInterrupted, UsageError
from bagoftricks.files import read_jsonl
from tests.engine.conftest import tiny
from tests.engine.test_resume import assert_bitwise_equal, final_state


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_extension_reproduces_from_its_recipe_and_leaves_the_run(tmp_path, capsys):
    r = tiny("train.epochs=1", "tricks.mixup_alpha=0.2", "tricks.mix_off_epochs=1",  # cosine, 4 steps per epoch
             "train.keep_checkpoints=4")
    run, longer, scratch = tmp_path / "run", tmp_path / "longer", tmp_path / "scratch"
    train(r, run, progress=False)
    before = _files(run)
    capsys.readouterr()
    extend_run(run, 3, longer, progress=False)
    assert _files(run) == before  # the finished run is only read
    assert "no longer a single-schedule run" in capsys.readouterr().err
    assert "no longer a single-schedule run" in (longer / "run.log").read_text()

    first = list_checkpoints(longer)[0]  # written before the first new step: NEW resumes from the start
    assert load_checkpoint(first)["epoch"] == 1 and load_checkpoint(first)["recipe"]["train"]["epochs"] == 3
    ext = recipe.load(longer / "recipe.yaml")
    assert ext.train.epochs == 3 and ext.schedule.extended_from == (1,)
    # the lr of the first epoch is the 1-epoch run's (down to the floor), then the 3-epoch schedule at step 4
    assert [scheduled_lr(ext, s, 4) for s in range(4)] == [scheduled_lr(r, s, 4) for s in range(4)]
    assert scheduled_lr(ext, 3, 4) == 0.0 and scheduled_lr(ext, 4, 4) > 0.05
    metrics = read_jsonl(longer / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and metrics[0] == read_jsonl(run / "metrics.jsonl")[0]

    train(ext, scratch, progress=False)  # the recorded recipe alone reproduces the extended run
    assert_bitwise_equal(final_state(longer)["model"], final_state(scratch)["model"])


def test_unfinished_run_or_fewer_epochs_refused(tmp_path):
    r = tiny("train.epochs=2")
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        train(r, part, progress=False, stop_after_steps=5)
    with pytest.raises(UsageError, match="not finished.*--resume"):
        extend_run(part, 4, tmp_path / "x", progress=False)
    train(r, part, resume=True, progress=False)
    with pytest.raises(UsageError, match="more than the 2 epochs"):
        extend_run(part, 2, tmp_path / "x", progress=False)
    with pytest.raises(UsageError, match="new folder"):
        extend_run(part, 3, part, progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_extension_options(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny("train.epochs=1"), run, progress=False)
    n = len(list_checkpoints(run))
    for argv, words in ((["--resume", str(run), "--epochs", "2"], "--out NEW"),
                        (["--resume", str(run), "--out", str(tmp_path / "n")], "--epochs"),
                        (["--resume", str(tmp_path / "nope")], "does not exist")):
        capsys.readouterr()
        assert main(["train", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert len(list_checkpoints(run)) == n and not (tmp_path / "n").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # finished: says how to go on
    assert f"to train it longer: bagoftricks train --resume {run} --epochs N --out NEW" in capsys.readouterr().out
