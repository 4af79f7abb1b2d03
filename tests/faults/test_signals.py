"""SIGTERM/SIGINT: the step in progress finishes, a checkpoint is written, the process exits 143/130,
and continuing (`train --resume DIR`, or the same command again with train.resume: auto) ends with
weights bitwise equal to an uninterrupted run. Under torchrun every rank stops at the same step,
whether torchrun itself or a single worker gets the signal (the latter: test_elastic.py).

The runs are real processes (`python -m bagoftricks`, `torchrun ...`) whose steps are slowed by
tests/faults/paced_main.py so that the signal surely arrives mid-run; the sleep changes no number.
"""
import signal

import pytest
import torch

from bagoftricks import recipe
from bagoftricks.cli import main
from bagoftricks.engine import loop
from bagoftricks.files import read_jsonl
from tests.distributed.launch import (FAULT_SETS, FAULT_STEPS, PACED, PYTHON, Proc, assert_bitwise_equal,
                                      final_state, has_checkpoint, reference_2rank, run, sets, stop_lines,
                                      torchrun_cmd, wait_for, worker_logs)

ONE_SETS = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
            "model.arch=resnet20", "model.width=4", "train.epochs=3", "train.batch_size=16", "data.augment=small",
            "train.device=cpu", "train.threads=1", "train.checkpoint_every_steps=1", "tricks.mixup_alpha=0.2",
            "model.drop_path=0.1", "tricks.ema_decay=0.9")  # 4 steps per epoch, 12 steps


@pytest.fixture(scope="module")
def reference_1proc(tmp_path_factory):
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("ref1") / "run"
    try:
        loop.train(recipe.validate(recipe.apply_overrides(recipe.Recipe(), list(ONE_SETS))), out, progress=False)
    finally:
        torch.set_num_threads(before)
    return final_state(out)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, code, how", [(signal.SIGTERM, 143, "--resume"), (signal.SIGINT, 130, "auto")],
                         ids=["SIGTERM-resume", "SIGINT-auto"])
def test_signal_checkpoints_exits_and_continues_bitwise(tmp_path, reference_1proc, sig, code, how):
    out = tmp_path / "run"
    cmd_sets = sets(ONE_SETS) + (["--set", "train.resume=auto"] if how == "auto" else [])
    with Proc([PYTHON, PACED, "train", *cmd_sets, "--out", str(out), "--no-progress"], tmp_path / "a.log",
              BOT_STEP_SLEEP="0.3") as p:
        wait_for(has_checkpoint(out), 90, "the first checkpoint", p)
        p.p.send_signal(sig)
        rc = p.wait(60)
        text = p.output()
    assert rc == code, text[-3000:]
    (got_sig, step), = stop_lines(text)
    assert got_sig == sig and 1 <= step < 12
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step:09d}.pt"
    assert final_state(out)["global_step"] == step

    before = torch.get_num_threads()
    try:
        if how == "--resume":
            assert main(["train", "--resume", str(out), "--no-progress"]) == 0
        else:  # the very same command again
            assert main(["train", *cmd_sets, "--out", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(before)
    done = final_state(out)
    assert done["global_step"] == 12
    assert_bitwise_equal(reference_1proc["model"], done["model"])
    assert_bitwise_equal(reference_1proc["ema"]["params"], done["ema"]["params"])
    assert [m["epoch"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]


def test_a_stopped_worker_of_a_launcher_ignores_sigterm_to_its_exit_and_a_lone_process_gets_its_handlers_back():
    # torchrun sends each worker's SIGTERM in turn: one that came after the loop had stopped (on the peer's signal)
    # found SIGTERM's default action restored and killed rank 1 before it said where it stopped
    import os
    from bagoftricks.engine.distributed import DistInfo
    from bagoftricks.engine.signals import StopProtocol
    before, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with StopProtocol(DistInfo(rank=1, world_size=2), torch.device("cpu")) as stop:
            stop.stopping()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # with the default action back, this would end the test process
        assert signal.getsignal(signal.SIGINT) == before_int  # SIGINT's handler is back (a background job's: ignored)
    finally:
        signal.signal(signal.SIGTERM, before)
    with StopProtocol(DistInfo(), torch.device("cpu")) as stop:
        stop.stopping()
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.timeout(300)
def test_sigterm_to_torchrun_stops_all_ranks_at_one_step_then_resume_is_bitwise(tmp_path, tmp_path_factory):
    ref = reference_2rank(tmp_path_factory.getbasetemp())
    out = tmp_path / "run"
    logs = tmp_path / "logs"
    with Proc(torchrun_cmd(PACED, "train", *sets(FAULT_SETS), "--out", str(out), "--no-progress", log_dir=logs),
              tmp_path / "a.log", BOT_STEP_SLEEP="0.4") as p:
        wait_for(has_checkpoint(out, 2), 120, "the checkpoint of step 2", p)
        p.p.send_signal(signal.SIGTERM)  # torchrun forwards it to every worker; mostly during step 3, mid-epoch
        rc = p.wait(90)
        text = p.output()
    assert rc != 0
    lines = stop_lines(worker_logs(logs))  # each worker's own files: a line missing there is one it never wrote
    assert len(lines) == 2 and lines[0] == lines[1], text[-3000:]  # both ranks, same step
    step = lines[0][1]
    assert 1 <= step < FAULT_STEPS
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step:09d}.pt"

    rc, text = run(torchrun_cmd("-m", "bagoftricks", "train", "--resume", str(out), "--no-progress"),
                   tmp_path / "b.log", timeout=180)
    assert rc == 0, text[-3000:]
    assert f"resumed from {out}/checkpoints/step-{step:09d}.pt" in text
    a, b = final_state(ref), final_state(out)
    assert b["global_step"] == FAULT_STEPS
    assert_bitwise_equal(a["model"], b["model"])
    assert_bitwise_equal(a["ema"]["params"], b["ema"]["params"])
    assert [m["epoch"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
