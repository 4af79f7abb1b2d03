"""`bagoftricks transfer` end to end on tiny scenes: run folder, scores, bit-exact resume, errors, backbone."""
import json

import pytest
import torch

from bagoftricks import cli
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.errors import RecipeError, TrainingInterrupted, UsageError
from bagoftricks.files import read_jsonl
from bagoftricks.transfer.loop import run_transfer
from bagoftricks.transfer.predict import draw_files, draw_run, load_transfer
from tests.transfer.conftest import tiny


def _final_model(run):
    return load_checkpoint(list_checkpoints(run)[-1])["model"]


@pytest.mark.parametrize("task,keys", [("detect", {"map_50", "map"}), ("segment", {"miou", "pixel_acc"})])
def test_run_folder_and_scores(tmp_path, task, keys):
    out = tmp_path / task
    final = run_transfer(tiny(f"transfer.task={task}"), out, progress=False)
    recs = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        assert keys <= set(r) and all(0.0 <= r[k] <= 100.0 for k in keys)
        assert r["train_loss"] > 0 and r["seconds"] >= r["train_seconds"]
    assert keys <= set(final)
    for f in ("recipe.yaml", "env.json", "run.log", "final.json"):
        assert (out / f).is_file()
    assert json.loads((out / "env.json").read_text())["task"] == task
    assert list((out / "tb").iterdir())
    job = load_transfer(out)
    assert job.recipe.transfer.task == task and not job.model.training


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_mid_epoch_resume_is_bitwise(tmp_path, task):
    r = tiny(f"transfer.task={task}", "transfer.scale_jitter=0.2")   # 2 steps per epoch, 4 in all
    run_transfer(r, tmp_path / "full", progress=False)
    with pytest.raises(TrainingInterrupted) as e:
        run_transfer(r, tmp_path / "part", progress=False, stop_after_steps=3)
    assert e.value.command == "transfer"
    assert cli._resume_hint(e.value) == f"to continue: bagoftricks transfer --resume {tmp_path / 'part'}"
    ck = load_checkpoint(list_checkpoints(tmp_path / "part")[-1])
    assert (ck["epoch"], ck["step"]) == (1, 1)
    run_transfer(r, tmp_path / "part", resume=True, progress=False)
    a, b = _final_model(tmp_path / "full"), _final_model(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = read_jsonl(tmp_path / "full" / "metrics.jsonl"), read_jsonl(tmp_path / "part" / "metrics.jsonl")
    assert [m["epoch"] for m in mb] == [1, 2]
    for x, y in zip(ma, mb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)


def test_backbone_from_a_train_run(tmp_path, backbone_run):
    r = tiny("transfer.task=segment", f"model.pretrained={backbone_run}", "train.epochs=1")
    run_transfer(r, tmp_path / "s", progress=False)
    assert json.loads((tmp_path / "s" / "env.json").read_text())["pretrained"] == str(backbone_run)
    with pytest.raises(RecipeError, match="model.pretrained: "):   # another width: the weights do not fit
        run_transfer(tiny(f"model.pretrained={backbone_run}", "model.width=8"), tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
    trained = load_checkpoint(list_checkpoints(backbone_run)[-1])["model"]
    first = load_checkpoint(list_checkpoints(tmp_path / "s")[-1])["model"]
    # the stem is frozen (trainable_layers 3 of 4) and its BN frozen: its weights are the backbone run's
    assert torch.equal(first["backbone.body.conv1.0.weight"], trained["conv1.0.weight"])


def test_errors_name_the_field(tmp_path):
    with pytest.raises(RecipeError, match="tricks.mixup_alpha: transfer does not read this field"):
        run_transfer(tiny("tricks.mixup_alpha=0.2"), tmp_path / "a", progress=False)
    with pytest.raises(RecipeError, match="data.name: 'fashion_mnist' is a classification dataset"):
        run_transfer(tiny("data.name=fashion_mnist"), tmp_path / "b", progress=False)
    with pytest.raises(RecipeError, match="model.pretrained"):
        run_transfer(tiny(f"model.pretrained={tmp_path / 'nothing'}"), tmp_path / "c", progress=False)
    with pytest.raises(UsageError, match="train.batch_size: 64 is larger than the 8"):
        run_transfer(tiny("train.batch_size=64"), tmp_path / "d", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_classification_train_refuses_scenes(tmp_path):
    from bagoftricks.data import DataError, load_split
    with pytest.raises(DataError, match="bagoftricks transfer"):
        load_split("fmnist_scenes", "", "train")


def test_cli_transfer_draw_and_exit_codes(tmp_path, capsys):
    r = tmp_path / "r.yaml"
    from bagoftricks import recipe
    r.write_text(recipe.dump(tiny("train.epochs=1", "transfer.task=segment")))
    out = tmp_path / "run"
    assert cli.main(["transfer", "--recipe", str(r), "--out", str(out), "--no-progress",  # the recipe's task
                     "--draw", "2"]) == 0
    text = capsys.readouterr().out
    assert "miou" in text and "pixel_acc" in text
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["test-0000.png", "test-0001.png"]
    assert cli.main(["transfer", "--task", "segment", "--recipe", str(r), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(["transfer", "--resume", str(out), "--no-progress"]) == 0      # complete: nothing to do
    # `predict` on a transfer run draws its label maps; a bad file is named and does not stop the others
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(imgs / "a.png")
    (imgs / "b.jpg").write_bytes(b"not an image")
    capsys.readouterr()
    assert cli.main(["predict", "--checkpoint", str(out), str(imgs), "--draw", str(tmp_path / "pics")]) == 0
    text = capsys.readouterr().out
    assert f"{imgs / 'a.png'} -> {tmp_path / 'pics' / 'a.png'}" in text and f"{imgs / 'b.jpg'}  error:" in text
    assert Image.open(tmp_path / "pics" / "a.png").size == (32, 32)
    assert cli.main(["predict", "--checkpoint", str(out), str(imgs / "b.jpg"), "--draw", str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2").exists()
    assert cli.main(["transfer", "--out", str(tmp_path / "x")]) == 2   # no task: neither --task nor a --recipe
    assert "--task detect|segment, or a --recipe whose transfer.task says it" in capsys.readouterr().err
    assert cli.main(["transfer", "--task", "detect", "--recipe", str(r), "--set", "transfer.aux_weight=-1",
                     "--out", str(tmp_path / "y")]) == 2
    assert "transfer.aux_weight: must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_draw_run_detection_pictures(tmp_path):
    run_transfer(tiny("train.epochs=1"), tmp_path / "d", progress=False)
    paths = draw_run(tmp_path / "d", 3, tmp_path / "pics")
    from PIL import Image
    assert len(paths) == 3 and Image.open(paths[0]).size == (2 * 32 + 2, 32)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "mine.jpg")     # a user's image, another size
    (drawn,) = draw_files(tmp_path / "d", [str(tmp_path / "mine.jpg")], tmp_path / "own")
    assert drawn == tmp_path / "own" / "mine.png" and Image.open(drawn).size == (32, 32)


@pytest.mark.timeout(120)
def test_sigterm_checkpoints_and_exits_143(tmp_path):
    """A real `bagoftricks transfer` process: SIGTERM finishes the step, writes a checkpoint, exits 143 and
    says how to continue."""
    import signal

    from bagoftricks import recipe
    from tests.distributed.launch import PYTHON, Proc, has_checkpoint, stop_lines, wait_for
    r = tmp_path / "r.yaml"
    r.write_text(recipe.dump(tiny("train.epochs=200", "train.checkpoint_every_steps=1", "transfer.task=segment")))
    out = tmp_path / "run"
    with Proc([PYTHON, "-m", "bagoftricks", "transfer", "--task", "segment", "--recipe", str(r), "--out", str(out),
               "--no-progress"], tmp_path / "a.log") as p:
        wait_for(has_checkpoint(out), 90, "the first checkpoint", p)
        p.p.send_signal(signal.SIGTERM)
        rc = p.wait(60)
        text = p.output()
    assert rc == 143, text[-3000:]
    (got, step), = stop_lines(text)
    assert got == signal.SIGTERM and 1 <= step < 400
    assert f"to continue: bagoftricks transfer --resume {out}" in text
    assert load_checkpoint(list_checkpoints(out)[-1])["global_step"] == step


def test_run_level_train_fields(tmp_path, capsys, monkeypatch):
    """train.eval_every, keep_checkpoints, checkpoint_every_steps, eval_batch_size and resume: auto, read by
    the transfer loop as by train's."""
    from bagoftricks.transfer import data as tdata
    sizes, batches = [], tdata.batch_indices
    monkeypatch.setattr(tdata, "batch_indices", lambda order, size, *a, **k: (sizes.append(size),
                                                                             batches(order, size, *a, **k))[1])
    r = tiny("transfer.task=segment", "train.eval_every=2", "train.keep_checkpoints=1",
             "train.checkpoint_every_steps=1", "train.eval_batch_size=3", "train.resume=auto")
    run_transfer(r, tmp_path / "r", progress=False)
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert "miou" not in recs[0] and "miou" in recs[1]
    assert sizes == [4, 4, 3]                                  # two training epochs of 4, one evaluation of 3
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-000000004.pt"]
    run_transfer(r, tmp_path / "r", progress=False)          # auto: the finished run is not started over
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(UsageError, match="holds a run of another recipe"):
        run_transfer(tiny("transfer.task=segment", "train.resume=auto"), tmp_path / "r", progress=False)
