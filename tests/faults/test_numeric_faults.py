"""fp16 overflow and non-finite losses.

* An fp16 step whose scaled gradients overflow is skipped: weights and optimizer state unchanged,
  counted in metrics.jsonl `skipped_steps`.
* train.max_bad_steps consecutive non-finite losses stop the run: exit 1, the message names the step.
* Weights that went non-finite are never checkpointed: the run stops with an error instead.
"""
import torch

from bagoftricks import recipe
from bagoftricks.cli import main
from bagoftricks import tricks
from bagoftricks.engine import classify, loop
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.files import read_jsonl
from tests.distributed.launch import sets

TINY = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
        "model.arch=resnet20", "model.width=4", "train.epochs=2", "train.batch_size=16", "data.augment=small",
        "train.device=cpu", "train.threads=1")  # 4 steps per epoch


def test_fp16_overflow_skips_the_step_and_counts_it(tmp_path, monkeypatch):
    calls, skips = [], []
    real_loss, real_step = classify.compute_loss, tricks.step_with_scaler

    def loss_overflowing_at_step_5(*a, **k):
        loss = real_loss(*a, **k)
        calls.append(1)
        return loss * 1e6 if len(calls) == 6 else loss  # finite in fp32, inf once scaled into fp16 grads

    def checked_step(scaler, optimizer, loss, *a, **kw):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in params]
        flag = real_step(scaler, optimizer, loss, *a, **kw)
        skipped = bool(flag)
        skips.append(skipped)
        if skipped:
            assert all(torch.equal(p, b) for p, b in zip(params, before)), "a skipped step changed the weights"
            assert all(all(torch.equal(optimizer.state[p][k], v) for k, v in s.items()) for p, s in zip(params, state))
        return flag

    monkeypatch.setattr(classify, "compute_loss", loss_overflowing_at_step_5)
    monkeypatch.setattr(tricks, "step_with_scaler", checked_step)
    r = recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*TINY, "train.precision=fp16"]))
    loop.train(r, tmp_path / "run", progress=False)
    assert len(skips) == 8 and skips[5], skips  # the injected overflow was skipped
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["skipped_steps"] for m in recs] == [sum(skips[:4]), sum(skips[4:])]
    assert recs[1]["skipped_steps"] >= 1


def test_non_finite_loss_for_max_bad_steps_exits_1_naming_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *sets(TINY), "--set", "optim.lr=1e30", "--set", "train.max_bad_steps=2",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "2 consecutive steps" in err and "epoch 1 step 2 (global step 2)" in err, err
    assert list_checkpoints(out) == []  # the weights went bad before the first epoch ended


def test_non_finite_weights_are_never_checkpointed(tmp_path, capsys, monkeypatch):
    """Weights that went bad behind the step's guard (here: poisoned right after step 2) are caught
    before the next checkpoint: exit 1 naming the step, the earlier checkpoints intact."""
    calls = []
    real_step = tricks.step_with_scaler

    def poisoned_at_step_2(scaler, optimizer, loss, *a, **k):
        skipped = real_step(scaler, optimizer, loss, *a, **k)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].fill_(float("nan"))
        return skipped

    monkeypatch.setattr(tricks, "step_with_scaler", poisoned_at_step_2)
    out = tmp_path / "run"
    code = main(["train", *sets(TINY), "--set", "train.checkpoint_every_steps=1", "--set", "train.keep_checkpoints=5",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "non-finite" in err and "global step 3" in err, err
    saved = list_checkpoints(out)
    assert [p.name for p in saved] == ["step-000000001.pt", "step-000000002.pt"]
    for p in saved:
        assert all(torch.isfinite(t).all() for t in load_checkpoint(p)["model"].values() if t.is_floating_point())
