"""`torchrun --nproc-per-node 2 -m bagoftricks train` on CPU (gloo): DDP really is one big batch.

* With SyncBN, 2 ranks x batch b end with the weights of 1 process x batch 2b (float tolerance):
  the same data (one step per epoch, so the union of the rank shards is the 1-process batch), BN
  statistics over both ranks, DDP's averaged gradients of per-rank mean losses, the same lr; with
  channels_last, EMA and a distillation teacher on.
* Evaluation counts each of an odd number (65) of test images once; metrics are reduced over ranks;
  only rank 0 writes and prints.
* Uneven data (70 images = 2 x 2 x 16 + 6) runs to the end, within a timeout, launched as two
  "nodes" (two torchrun agents at one c10d rendezvous endpoint).
* train.budget: the ranks time their steps together and run rank 0's length, whatever each one's clock says.
"""
import json
import re

import pytest
import torch

from bagoftricks import recipe
from bagoftricks.engine import loop, setup
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.files import read_jsonl
from tests.distributed.launch import (FAULT_SETS, FAULT_STEPS, ROOT, final_state, reference_2rank, run, sets,
                                     torchrun_cmd)

EQ_SETS = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=260", "data.train_limit=32",
           "data.num_classes=4", "model.arch=resnet20", "model.width=4", "model.init=kaiming", "optim.lr=0.05",
           "train.epochs=3", "data.augment=none", "train.device=cpu", "train.threads=1", "model.sync_bn=true",
           "train.channels_last=true", "tricks.ema_decay=0.5", "train.eval_batch_size=8")
TEST_IMAGES = 65  # synthetic test split: max(64, 260 // 4)


def make(*items: str) -> recipe.Recipe:
    return recipe.validate(recipe.apply_overrides(recipe.Recipe(), list(items)))


def rel_diff(a: dict, b: dict) -> float:
    num = den = 0.0
    for k in a:
        if a[k].is_floating_point():
            x, y = a[k].double(), b[k].double()
            num += ((x - y) ** 2).sum().item()
            den += (x ** 2).sum().item()
    return (num / den) ** 0.5


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.timeout(240)
def test_sync_bn_two_ranks_equal_one_rank_with_double_batch(tmp_path, one_thread):
    teacher = tmp_path / "teacher"
    loop.train(make(*EQ_SETS, "model.sync_bn=false", "train.epochs=1", "model.variant=D", "train.batch_size=32"),
               teacher, progress=False)
    eq = (*EQ_SETS, f"tricks.distill_teacher={teacher}", "tricks.distill_temperature=2")

    two = tmp_path / "two"
    rc, out = run(torchrun_cmd("-m", "bagoftricks", "train", *sets(eq), "--set", "train.batch_size=16",
                               "--out", str(two), "--no-progress"), tmp_path / "two.log", timeout=180)
    assert rc == 0, out[-4000:]
    one = tmp_path / "one"
    loop.train(make(*eq, "train.batch_size=32"), one, progress=False)

    a, b = final_state(one), final_state(two)
    kinds = {type(m).__name__ for m in setup.setup_model(make(*eq), 4, 3, torch.device("cpu"),
                                                         DistInfo(0, 2)).modules()}
    assert "SyncBatchNorm" in kinds
    # float rounding only: without SyncBN this is ~1e-2, with a wrong gradient average ~1
    assert rel_diff(a["model"], b["model"]) < 1e-5
    assert rel_diff(a["ema"]["params"], b["ema"]["params"]) < 1e-5
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-3, atol=1e-5, msg=k)

    ma, mb = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [m["epoch"] for m in mb] == [1, 2, 3]
    for x, y in zip(ma, mb):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)  # reduced over both ranks
        assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-4)
        assert x["val_images"] == y["val_images"] == TEST_IMAGES  # 32 + 33 over the ranks, none twice
    env = json.loads((two / "env.json").read_text())
    assert (env["world_size"], env["global_batch"]) == (2, 32)

    # only rank 0 writes and prints
    assert len(list((two / "tb").glob("events.*"))) == 1
    log = (two / "run.log").read_text()
    assert log.count("run folder:") == 1 and log.count("epoch 3/3") == 1
    assert "[default0]:run folder" in out and "[default1]:run folder" not in out
    assert "[default1]:epoch" not in out and "[default1]:test top-1" not in out


@pytest.mark.timeout(300)
def test_two_nodes_by_rendezvous_with_uneven_data_run_to_the_end(tmp_path_factory):
    """Two torchrun agents ('nodes') meeting at a c10d rendezvous endpoint, one worker each; 70
    images, batch 16: 35 per rank, 2 steps each, the rest dropped; no rank waits for another.
    (The fault tests compare their single-node runs with this one, bitwise.)"""
    ref = reference_2rank(tmp_path_factory.getbasetemp())
    recs = read_jsonl(ref / "metrics.jsonl")
    assert [m["epoch"] for m in recs] == [1, 2, 3, 4]
    assert all(m["val_images"] == 64 and m["skipped_steps"] == 0 for m in recs)
    env = json.loads((ref / "env.json").read_text())
    assert (env["world_size"], env["steps_per_epoch"], env["in_memory_data"]) == (2, 2, False)
    assert final_state(ref)["global_step"] == FAULT_STEPS


@pytest.mark.timeout(200)
def test_no_process_group_thread_outlives_train(tmp_path):
    """train() leaves no thread of the process group behind on any rank, so nothing of it runs while the
    interpreter shuts down (workers of finished two-node runs aborted then: 'terminate called without an
    active exception'). Fails if the group is imported into a module's default arguments or is still held
    by the DDP wrapper when train() returns."""
    script = str(ROOT / "tests" / "distributed" / "teardown_main.py")
    rc, out = run(torchrun_cmd(script, str(tmp_path / "run"), *FAULT_SETS), tmp_path / "log", 150)
    assert rc == 0, out[-3000:]
    lists = [json.loads(x) for x in re.findall(r"threads after train: (\[.*\])", out)]
    assert len(lists) == 2, out[-3000:]
    for names in lists:
        assert names, out[-3000:]  # /proc was read: the main thread at least
        assert not [n for n in names if "gloo" in n], names


BUDGET_SETS = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=70", "data.num_classes=4",
               "model.arch=resnet20", "model.width=4", "train.batch_size=16", "train.device=cpu", "train.threads=1",
               "data.workers=0", "train.eval_every=1000", "train.budget=20s", "tricks.warmup_epochs=50")


@pytest.mark.timeout(200)
def test_budget_ranks_time_together_and_run_rank0s_length(tmp_path):
    """A budgeted run under torchrun whose rank 1 reads its timing clock 10x fast, so that it would end each timing
    window steps before rank 0: the ranks keep stepping while either wants to (a rank that left its window alone
    had its next collective pair with the other's training step: the run hung or failed), and both train the
    length rank 0 chose. Rank 1, its steps 10x slow by its clock, finds ~45 steps where rank 0 finds ~450, too
    few for the 100-step warmup: its refusal is not the run's (a rank that raised alone left rank 0 waiting)."""
    script = str(ROOT / "tests" / "distributed" / "skewed_budget_main.py")
    out_dir = tmp_path / "run"
    rc, out = run(torchrun_cmd(script, str(out_dir), *BUDGET_SETS), tmp_path / "log", 150,
                  BAGOFTRICKS_DIST_TIMEOUT="60")
    assert rc == 0, out[-3000:]
    record = json.loads((out_dir / "env.json").read_text())["budget"]
    steps = recipe.load(str(out_dir / "recipe.yaml")).train.steps
    # the length rank 0 chose, or re-sized it to at an epoch's end (rank 0's, every rank's: else a collective hangs)
    assert steps == (record["resized"][-1]["steps"] if record.get("resized") else record["steps"]) > 0
    assert final_state(out_dir)["global_step"] == steps
    assert sum(record["timed_steps"].values()) >= 12
    # rank 1's own reading of its timing: too few steps for the warmup, a refusal that rank 0's fit overrode
    assert re.search(r"rank 1 own fit: refused: train.budget: 20s (leaves time for \d+ steps|is too short)", out), \
        out[-3000:]  # too few for the warmup, or (its clock still slower on a loaded machine) not one
    assert f"rank 0 own fit: {record['steps']} steps" in out
