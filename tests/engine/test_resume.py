"""Bit-exact resume: a run stopped mid-epoch and resumed ends with weights bitwise equal to an
uninterrupted run (CPU), for both data paths and with the random tricks switched on."""
import json

import pytest
import torch

from bagoftricks.engine import train
from bagoftricks.errors import TrainingInterrupted
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.files import read_jsonl
from tests.engine.conftest import tiny

RANDOM_TRICKS = ("tricks.mixup_alpha=0.2", "tricks.cutmix_alpha=1.0", "tricks.random_erasing=0.5",
                 "model.drop_path=0.2", "tricks.label_smoothing=0.1", "tricks.ema_decay=0.9",
                 "tricks.ema_warmup=true",  # the decay depends on the updates done: a resume must restore their count
                 "tricks.warmup_epochs=0.5", "data.augment=paper", "tricks.zero_gamma=true",
                 "tricks.lookahead_every=3", "tricks.bn_lr_mult=4")


def final_state(run):
    return load_checkpoint(list_checkpoints(run)[-1])


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("extra", [(), RANDOM_TRICKS, ("data.in_memory=never", "data.workers=0", "data.augment=paper",
                                                       "data.flip_mode=alternate"),
                                   ("model.arch=airbench", "model.stem=whiten", "tricks.bn_freeze_gamma=true",
                                    "data.flip_mode=alternate", "tricks.lookahead_every=2",
                                    "data.progressive_sizes=[12]")],
                         ids=["plain", "random-tricks", "per-image-loader", "airbench-whiten"])
def test_mid_epoch_resume_is_bitwise(tmp_path, extra):
    r = tiny("train.epochs=3", *extra)          # 4 steps per epoch, 12 steps
    full = tmp_path / "full"
    train(r, full, progress=False)
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        train(r, part, progress=False, stop_after_steps=6)   # stops inside epoch 2 (step 2 of 4)
    ck = final_state(part)
    assert (ck["epoch"], ck["step"]) == (1, 2)
    train(r, part, resume=True, progress=False)
    a, b = final_state(full), final_state(part)
    assert_bitwise_equal(a["model"], b["model"])
    if a["ema"]:
        assert_bitwise_equal(a["ema"]["params"], b["ema"]["params"])
    ma, mb = read_jsonl(full / "metrics.jsonl"), read_jsonl(part / "metrics.jsonl")
    assert [m["epoch"] for m in mb] == [1, 2, 3]
    for x, y in zip(ma, mb):
        assert x["val_top1"] == y["val_top1"] and x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-9)


def test_a_resumed_runs_wall_seconds_count_the_attempts_before(tmp_path):
    r = tiny("train.epochs=3")
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        train(r, part, progress=False, stop_after_steps=6)   # epoch 1 done, stopped inside epoch 2
    lines = read_jsonl(part / "metrics.jsonl")
    assert len(lines) == 1
    lines[0]["seconds"] = 1000.0   # as if the first attempt's epoch 1 had taken 1000 s
    (part / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    train(r, part, resume=True, progress=False)
    final = json.loads((part / "final.json").read_text())
    seconds = [m["seconds"] for m in read_jsonl(part / "metrics.jsonl")]
    assert seconds[0] == 1000.0 and final["wall_seconds"] >= sum(seconds) > 1000.0


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    r = tiny()
    train(r, tmp_path / "a", progress=False)
    train(r, tmp_path / "b", progress=False)
    train(tiny("train.seed=1"), tmp_path / "c", progress=False)
    a, b, c = (final_state(tmp_path / n)["model"] for n in "abc")
    assert_bitwise_equal(a, b)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_loads_weights_only_and_rotation(tmp_path):
    r = tiny("train.checkpoint_every_steps=1", "train.keep_checkpoints=2")
    train(r, tmp_path / "r", progress=False)
    ckpts = list_checkpoints(tmp_path / "r")
    assert [p.name for p in ckpts] == ["step-000000007.pt", "step-000000008.pt"]
    assert (tmp_path / "r" / "checkpoints" / "latest").read_text().strip() == "step-000000008.pt"
    state = torch.load(ckpts[-1], weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 0 and state["global_step"] == 8


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    r = tiny()
    train(r, tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    train(r, tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == before


def test_resumed_epoch_seconds_count_both_attempts(tmp_path):
    """metrics.jsonl `seconds` (the epoch's wall time, evaluation included) of an epoch stopped and
    resumed adds the time before the stop, so it is never below its `train_seconds`."""
    run = tmp_path / "r"
    with pytest.raises(TrainingInterrupted):
        train(tiny(), run, progress=False, stop_after_steps=6)  # inside epoch 2
    before = load_checkpoint(list_checkpoints(run)[-1])["epoch_acc"]
    assert before["wall"] >= before["seconds"] > 0
    train(tiny(), run, resume=True, progress=False)
    resumed = read_jsonl(run / "metrics.jsonl")[1]
    assert resumed["seconds"] >= resumed["train_seconds"] >= before["seconds"]
    assert resumed["seconds"] > before["wall"]
