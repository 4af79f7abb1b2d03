"""Checkpoints under faults: kill -9 at random moments of writing, disk full, truncated or garbage files.

* After any kill, every file under a final name (step-N.pt) loads and holds what was written; the
  'latest' pointer names a complete file; rotation never removed the newest complete checkpoint.
* Disk full: the previous checkpoint stays complete and 'latest'; the error names the file; the
  command line exits 1 with one line.
* A truncated newest checkpoint: resume falls back to the previous one with a warning and still ends
  bitwise equal; no valid checkpoint at all: exit 2 naming the file, nothing started from scratch.
"""
import errno
import os
import random
import signal
import time

import pytest
import torch

from bagoftricks import files
from bagoftricks.cli import main
from bagoftricks import checkpoint as ckpt
from bagoftricks.checkpoint import (CheckpointWriteError, list_checkpoints, load_checkpoint,
                                           newest_valid_checkpoint, save_checkpoint)
from bagoftricks.files import read_jsonl
from tests.distributed.launch import assert_bitwise_equal, sets

TINY = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
        "model.arch=resnet20", "model.width=4", "train.epochs=2", "train.batch_size=16", "data.augment=small",
        "train.device=cpu", "train.threads=1", "tricks.mixup_alpha=0.2")  # 4 steps per epoch

BIG = torch.arange(1 << 20, dtype=torch.float32)  # 4 MB: a write takes long enough to be interrupted


def _state(step: int) -> dict:
    return {"model": {"w": BIG, "step": torch.tensor([step])}, "recipe": {}, "step": step}


def _step(p) -> int:
    return int(p.name[len("step-"):len("step-") + 9])


@pytest.mark.timeout(120)
def test_kill_9_at_random_moments_of_writing(tmp_path):
    rng = random.Random(1234)
    run = tmp_path / "run"
    newest_done = 0
    kinds = set()
    for _ in range(30):
        start = newest_done + 1
        pid = os.fork()
        if pid == 0:  # the writer: checkpoints in a loop, as rank 0 does, until killed
            try:
                step = start
                while True:
                    save_checkpoint(run, _state(step), step, keep=2)
                    step += 1
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

        found = list_checkpoints(run)
        for p in found:  # every final name is a complete file with the right content
            state = load_checkpoint(p)
            assert torch.equal(state["model"]["w"], BIG) and int(state["model"]["step"]) == _step(p), p
        if not found:
            assert newest_done == 0, "a complete checkpoint disappeared"
            continue
        assert _step(found[-1]) >= newest_done, "rotation deleted the newest complete checkpoint"
        latest = (run / "checkpoints" / "latest")
        if latest.exists():
            name = latest.read_text().strip()
            assert name in [p.name for p in found], f"latest names {name}, not a complete checkpoint"
            kinds.add("lagging" if name != found[-1].name else "current")
            load_checkpoint(run / "checkpoints" / name)
        temps = [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
        assert len(temps) <= 1  # only the killed writer's own; every save cleans up older ones
        kinds.add("temp left" if temps else "no temp")
        newest_done = _step(found[-1])
    assert newest_done > 5  # the writers made progress between kills
    assert {"current", "temp left"} <= kinds  # kills did land in the middle of writes
    # a kill between a rename and the rotation leaves one extra file; the next complete save removes it
    save_checkpoint(run, _state(newest_done + 1), newest_done + 1, keep=2)
    assert [_step(p) for p in list_checkpoints(run)] == [newest_done, newest_done + 1]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


class _FullDisk:
    """A file object that accepts `room` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, b):
        if len(b) > self.room:
            self.f.write(bytes(b[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, _state(1), 1, keep=1)
    real = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), 100_000))
    with pytest.raises(CheckpointWriteError, match=r"step-000000002\.pt: disk full"):
        save_checkpoint(run, _state(2), 2, keep=1)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(run)] == ["step-000000001.pt"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000000001.pt"
    assert int(load_checkpoint(run / "checkpoints" / "step-000000001.pt")["model"]["step"]) == 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_disk_full_while_writing_latest(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, _state(1), 1, keep=1)
    real = ckpt.atomic_write_text

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt, "atomic_write_text", full)
    with pytest.raises(CheckpointWriteError, match="latest"):
        save_checkpoint(run, _state(2), 2, keep=1)
    monkeypatch.setattr(ckpt, "atomic_write_text", real)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000000001.pt"
    assert [p.name for p in list_checkpoints(run)] == ["step-000000001.pt", "step-000000002.pt"]  # none deleted


def test_disk_full_through_the_cli_exits_1_naming_the_file(tmp_path, monkeypatch, capsys, keep_threads):
    run = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save_until_full(obj, f, *a, **k):
        calls.append(1)
        if len(calls) >= 3:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", save_until_full)
    code = main(["train", *sets(TINY), "--set", "train.checkpoint_every_steps=1", "--out", str(run), "--no-progress"])
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "disk full" in err and str(run / "checkpoints" / "step-000000003.pt") in err, err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000000002.pt"
    assert load_checkpoint(run / "checkpoints" / "step-000000002.pt")["global_step"] == 2
    assert [p.name for p in list_checkpoints(run)] == ["step-000000001.pt", "step-000000002.pt"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_newest_valid_checkpoint_warns_and_falls_back(tmp_path):
    run = tmp_path / "run"
    for s in (1, 2):
        save_checkpoint(run, _state(s), s, keep=3)
    newest = list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="step-000000002.pt"):
        path, state = newest_valid_checkpoint(run)
    assert path.name == "step-000000001.pt" and int(state["model"]["step"]) == 1


def test_resume_falls_back_past_a_truncated_checkpoint_and_ends_bitwise(tmp_path, capsys, keep_threads):
    run = tmp_path / "run"
    cmd = ["train", *sets(TINY), "--set", "train.checkpoint_every_steps=3", "--set", "train.keep_checkpoints=3",
           "--out", str(run), "--no-progress"]
    assert main(cmd) == 0
    names = [p.name for p in list_checkpoints(run)]
    assert names == ["step-000000004.pt", "step-000000006.pt", "step-000000008.pt"]
    full = load_checkpoint(run / "checkpoints" / names[-1])
    bad = run / "checkpoints" / names[-1]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # torn by a dying disk
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and names[-1] in captured.err
    assert "resumed from" in captured.out and names[-2] in captured.out  # mid-epoch: epoch 2, step 2
    assert (run / "checkpoints" / (names[-1] + ".corrupt")).exists()
    assert_bitwise_equal(full["model"], load_checkpoint(list_checkpoints(run)[-1])["model"])
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("how", ["--resume", "auto"])
def test_no_valid_checkpoint_exits_2_naming_the_file(tmp_path, capsys, how, keep_threads):
    run = tmp_path / "run"
    cmd = ["train", *sets(TINY), "--set", "train.epochs=1", "--set", "train.resume=auto", "--out", str(run),
           "--no-progress"]
    assert main(cmd) == 0
    path = list_checkpoints(run)[-1]
    path.write_bytes(b"not a checkpoint at all")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    code = main(["train", "--resume", str(run)] if how == "--resume" else cmd)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and path.name in err and "no valid checkpoint" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing restarted
