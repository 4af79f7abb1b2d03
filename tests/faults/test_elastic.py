"""`torchrun --max-restarts 2` through two faults in one job, ending bitwise equal to an uninterrupted run:

1. SIGTERM to one worker (rank 1) only: it tells rank 0 through the per-step all-reduce, both finish
   the same step, rank 0 writes the checkpoint, both exit 143 at the same global step;
2. torchrun restarts the group; the new workers (TORCHELASTIC_RESTART_COUNT=1) find the run folder
   the first attempt created and resume from its newest checkpoint;
3. SIGKILL to rank 0 (the writer, maybe mid-write) a few steps later: torchrun restarts again, the
   workers resume from the newest complete checkpoint and finish.
"""
import os
import signal

import pytest

from bagoftricks.files import read_jsonl
from tests.distributed.launch import (FAULT_SETS, FAULT_STEPS, PACED, Proc, assert_bitwise_equal, final_state,
                                      has_checkpoint, reference_2rank, sets, stop_lines, torchrun_cmd, wait_for,
                                      worker_pid)


@pytest.mark.timeout(300)
def test_sigterm_one_worker_then_sigkill_another_restart_and_resume_bitwise(tmp_path, tmp_path_factory):
    ref = reference_2rank(tmp_path_factory.getbasetemp())
    out = tmp_path / "run"
    with Proc(torchrun_cmd(PACED, "train", *sets(FAULT_SETS), "--out", str(out), "--no-progress", max_restarts=2),
              tmp_path / "a.log", BOT_STEP_SLEEP="0.3") as p:
        wait_for(has_checkpoint(out, 2), 120, "the checkpoint of step 2", p)
        os.kill(worker_pid(p, 1), signal.SIGTERM)  # during step 3 (mostly): a mid-epoch stop
        wait_for(lambda: len(stop_lines(p.output())) >= 2, 60, "both ranks to stop", p)
        first, second = stop_lines(p.output())[:2]
        assert first == second and first[0] == signal.SIGTERM  # same signal, same global step on both ranks
        step = first[1]
        assert 1 <= step <= FAULT_STEPS - 3, "the signal came too late for the rest of the test"

        wait_for(has_checkpoint(out, step + 2), 120, "a checkpoint of the restarted group", p)
        os.kill(worker_pid(p, 0), signal.SIGKILL)  # during step + 3 (mostly): resumes mid-epoch again
        rc = p.wait(200)
        text = p.output()
    assert rc == 0, text[-4000:]
    log = (out / "run.log").read_text()
    assert log.count("resumed from") == 2 and f"step-{step:09d}.pt" in log
    a, b = final_state(ref), final_state(out)
    assert b["global_step"] == FAULT_STEPS
    assert_bitwise_equal(a["model"], b["model"])
    assert_bitwise_equal(a["ema"]["params"], b["ema"]["params"])
    assert [m["epoch"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not [q for q in (out / "checkpoints").iterdir() if q.name.endswith(".tmp")]
