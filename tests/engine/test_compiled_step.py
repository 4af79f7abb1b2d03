"""train.compile: none | model | step.

On the CPU "step" compiles forward + loss with inductor: the same losses as eager within a stated tolerance,
and a run stopped mid-epoch and resumed ends bitwise where an uninterrupted one does (which also makes it
deterministic run to run). The CUDA-graph capture is run here with a stand-in for the CUDA side that records
the update and replays it from the graph's own input tensors: it must reproduce the eager steps bit for bit."""
from __future__ import annotations

import pytest
import torch
import yaml

from bagoftricks import recipe
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.engine import compiled, setup, train
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.errors import TrainingInterrupted, UsageError
from tests.engine.conftest import tiny

CPU = torch.device("cpu")
# one small network and one input signature for the two inductor tests: the second finds the first's kernels in
# inductor's cache
INDUCTOR = ("model.arch=resnet8", "model.width=4", "data.image_size=12", "data.synthetic_samples=32",
            "train.batch_size=8")
# Eager and inductor sum in other orders: over 4 steps of SGD the losses differed by up to 2.6e-7 (relative) and
# the weights by up to 3e-7 (measured here, fp32); the bounds leave 30x that. A wrong graph is off by O(1).
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def _run_steps(r, n):
    t = setup.setup_training(r, CPU, DistInfo())
    setup.wrap_for_training(t)
    batches = t.data.train.epoch(0)
    losses = [float(t.step(next(batches), 0, s).loss.detach()) for s in range(n)]
    return t, losses, torch.cat([p.detach().flatten() for p in t.model.state_dict().values() if p.is_floating_point()])


def test_step_on_cpu_gives_eager_losses_within_tolerance():
    r = tiny(*INDUCTOR, "tricks.warmup_epochs=0.5")
    _, eager, we = _run_steps(r, 4)
    t, stepped, ws = _run_steps(recipe.apply_overrides(r, ["train.compile=step"]), 4)
    assert isinstance(t.step.core, compiled.CompiledUpdate) and t.step.core.compile_seconds > 0
    assert stepped == pytest.approx(eager, rel=LOSS_RTOL)
    assert torch.allclose(ws, we, atol=WEIGHT_ATOL)


def test_step_run_resumes_bitwise_from_its_own_checkpoints(tmp_path):
    r = tiny(*INDUCTOR, "train.compile=step")   # 4 steps per epoch, 8 steps
    train(r, tmp_path / "full", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(r, tmp_path / "part", progress=False, stop_after_steps=5)
    train(r, tmp_path / "part", resume=True, progress=False)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / n)[-1])["model"] for n in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "full" / "run.log").read_text()
    assert "train.compile: step: forward + loss compiled" in log and "compile_seconds" in \
        (tmp_path / "full" / "final.json").read_text()


class RecordedGraphs:
    """The CUDA side of CapturedUpdate, on the CPU: warm-up runs eagerly; a capture runs the update once and puts
    every tensor it changed back (a CUDA capture records kernels without running them); a replay runs it again
    and writes the results into the captured output tensors, as a replayed graph writes into its memory."""

    def __init__(self, step):
        self.step, self.replays = step, 0

    def _tensors(self):
        opt = self.step.optimizer
        state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        return list(self.step.model.parameters()) + list(self.step.model.buffers()) + state

    def warm(self, fn):
        return fn()

    def capture(self, fn):
        saved = [t.detach().clone() for t in self._tensors()]
        out = fn()
        with torch.no_grad():
            for t, s in zip(self._tensors(), saved):
                t.copy_(s)
        return (fn, out), out

    def replay(self, graph):
        fn, out = graph
        self.replays += 1
        for o, n in zip(out, fn()):
            o.copy_(n)

    def sync(self):
        pass


def _captured(step):
    return compiled.CapturedUpdate(step, RecordedGraphs(step), compile_fn=lambda f, **k: f)


@pytest.mark.parametrize("extra", [(), ("optim.name=adamw", "optim.weight_decay=0.05")], ids=["sgd", "adamw"])
def test_a_captured_step_replays_what_eager_computes(extra):
    """Warmup moves the lr every step, progressive resizing and mixup (off for the last epoch) make three input
    signatures; with lookahead and EMA around the update. Every step's loss and the end's weights are bitwise the
    eager ones: nothing the graph was captured with (the lr, the batch) is stale at a replay."""
    r = tiny("train.epochs=3", "tricks.warmup_epochs=1", "tricks.mixup_alpha=0.2", "tricks.mix_off_epochs=1",
             "data.progressive_sizes=[12]", "tricks.lookahead_every=3", "tricks.ema_decay=0.9", "train.batch_size=8",
             *extra)
    n = 24   # 8 steps per epoch: 3 eager, then a capture and 5 replays of each signature
    t0 = setup.setup_training(r, CPU, DistInfo())
    t1 = setup.setup_training(r, CPU, DistInfo())
    t1.step.core = core = _captured(t1.step)
    losses = [[], []]
    for e in range(3):
        for t, out in ((t0, losses[0]), (t1, losses[1])):
            for s, batch in enumerate(t.data.train.epoch(e)):
                out.append(float(t.step(batch, e, s).loss.detach()))
    assert losses[0] == losses[1] and len(losses[0]) == n
    for a, b in zip(t0.model.state_dict().values(), t1.model.state_dict().values()):
        assert torch.equal(a, b)
    assert len(core.entries) == 3 and core.graphs.replays == n - 3 * compiled.CAPTURE_AFTER
    assert all(isinstance(g["lr"], torch.Tensor) for g in t1.optimizer.param_groups)
    assert all("capturable" not in g or g["capturable"] is False for g in t1.optimizer.param_groups)


@pytest.mark.parametrize("extra, words", [
    (("optim.name=lars",), "optim.name 'lars' runs Lars"),
    (("optim.name=muon",), "optim.name 'muon' runs Muon"),
])
def test_capture_refuses_what_it_cannot_capture(extra, words):
    t = setup.setup_training(tiny(*extra), CPU, DistInfo())
    with pytest.raises(UsageError, match=words):
        _captured(t.step)
    t.step.dinfo = DistInfo(rank=0, world_size=2)
    assert "under torchrun use train.compile: model" in compiled.capture_problem(t.step)


@pytest.mark.parametrize("old, new", [(True, "model"), (False, "none"), ("true", "model"), ("step", "step")])
def test_older_recipes_read_compile_as_a_mode(old, new):
    assert recipe.from_dict({"train": {"compile": old}}).train.compile == new
    assert recipe.apply_overrides(recipe.Recipe(), [f"train.compile={str(old).lower()}"]).train.compile == new


def test_a_run_folder_written_with_compile_false_resumes(tmp_path):
    r = tiny()
    with pytest.raises(TrainingInterrupted):
        train(r, tmp_path / "old", progress=False, stop_after_steps=2)
    (ck,) = list_checkpoints(tmp_path / "old")
    state = load_checkpoint(ck)
    state["recipe"]["train"]["compile"] = False   # what a run folder of the boolean field holds
    torch.save(state, ck)
    text = yaml.safe_load((tmp_path / "old" / "recipe.yaml").read_text())
    text["train"]["compile"] = False
    (tmp_path / "old" / "recipe.yaml").write_text(yaml.safe_dump(text))
    final = train(r, tmp_path / "old", resume=True, progress=False)
    assert final["epoch"] == 2
