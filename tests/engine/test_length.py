"""A run's length: train.epochs, train.steps (the last epoch partial), or train.budget (steps fitted to the
machine's measured speed, then recorded so that a rerun or a resume is the same run)."""
import json
import time

import pytest
import torch

from bagoftricks import recipe, tricks
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.engine import budget, derive, loop
from bagoftricks.errors import RecipeError, TrainingInterrupted, UsageError
from bagoftricks.files import read_jsonl

BASE = ["data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
        "model.arch=resnet8", "model.width=4", "train.batch_size=16", "data.augment=small", "train.device=cpu",
        "schedule.kind=cosine"]  # 4 steps per epoch


def make(*overrides):
    return recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*BASE, *overrides]))


def weights(run):
    return load_checkpoint(list_checkpoints(run)[-1])["model"]


def test_steps_set_the_length_and_the_schedule_whatever_the_epochs(tmp_path):
    r = make("train.epochs=2", "train.steps=10")
    assert (derive.run_steps(r, 4), derive.run_epochs(r, 4)) == (10, 3)
    assert [derive.epoch_steps(r, e, 4) for e in range(4)] == [4, 4, 2, 0]
    lrs = [derive.scheduled_lr(r, s, 4) for s in range(10)]
    assert lrs[-1] == 0.0 and lrs[0] > lrs[5] > 0  # cosine over the 10 steps, to the floor on the last one
    final = loop.train(r, tmp_path / "a", progress=False)
    assert [m["epoch"] for m in read_jsonl(tmp_path / "a" / "metrics.jsonl")] == [1, 2, 3]
    ck = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    assert (ck["epoch"], ck["step"], ck["global_step"]) == (3, 0, 10)
    assert final["epoch"] == 3 and "val_top1" in final
    assert "train.steps 10 (3 epochs of 4 steps" in (tmp_path / "a" / "run.log").read_text()


def test_a_run_stopped_in_its_partial_last_epoch_resumes_bit_exactly(tmp_path):
    r = make("train.steps=10")
    loop.train(r, tmp_path / "whole", progress=False)
    with pytest.raises(TrainingInterrupted):
        loop.train(r, tmp_path / "cut", progress=False, stop_after_steps=9)
    loop.train(recipe.load(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True, progress=False)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rules_against_the_length_are_checked_once_the_data_gives_its_epochs(tmp_path):
    r = make("train.steps=6", "data.progressive_sizes=[12, 14]")  # 6 steps = 2 epochs: no room for 2 sizes
    with pytest.raises(RecipeError, match=r"train.steps: 6 steps are 2 epoch\(s\) of 4 steps .*progressive_sizes"):
        loop.train(r, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(RecipeError, match="schedule.extended_from"):
        make("train.steps=6", "schedule.extended_from=[1]")
    # a partial last epoch counts whole above: 3 steps are "1 epoch", yet a 0.9-epoch warmup is 4 steps
    assert derive.length_problem(make("train.steps=5", "tricks.warmup_epochs=1"), 4) == ""
    with pytest.raises(RecipeError, match=r"train.steps: 3 steps .*tricks.warmup_epochs: 0.9 epoch\(s\) are 4 "
                                          r"steps here, not fewer than the run's 3"):
        loop.train(make("train.steps=3", "tricks.warmup_epochs=0.9"), tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


def test_budget_parses_durations():
    assert [recipe.budget_seconds(t) for t in ("170", "170s", "3min", "3m", "1.5h")] == [170, 170, 180, 180, 5400]
    for bad in ("0", "3 hours", "-1", "fast"):
        with pytest.raises(RecipeError, match="train.budget"):
            make(f"train.budget={bad}")


def timing(step=0.1, evaluation=1.0, checkpoint=0.01, setup=0.5, sizes=(16,)):
    return budget.Timing(step=dict.fromkeys(sizes, step), evaluation=evaluation, checkpoint=checkpoint, setup=setup)


@pytest.fixture
def steady(monkeypatch):
    """The run's steps take as long as its (faked) timing said: the budget never re-sizes it (the real steps of these
    tiny models take milliseconds, not the timing's tenths of a second). The re-size is tested below."""
    monkeypatch.setattr(budget, "resize", lambda *args: None)


def test_the_fitted_steps_are_the_most_whose_predicted_run_fits():
    r = make("train.eval_every=1")
    t = timing()
    n = budget.steps_within(r, 4, t, 10.0)
    assert budget.predicted_seconds(r, 4, t, n) <= 10.0 < budget.predicted_seconds(r, 4, t, n + 1)
    # 4 steps (0.4 s) + an evaluation (1 s) + a checkpoint per epoch, after the set-up
    assert budget.predicted_seconds(r, 4, t, 8) == pytest.approx(0.5 + 0.8 + 2 * (1.0 + 0.01))
    assert budget.steps_within(r, 4, t, 1.0) == 0


def test_progressive_sizes_are_timed_each_at_their_cost():
    r = make("data.progressive_sizes=[8, 12]", "train.eval_every=100")
    t = budget.Timing(step={8: 0.01, 12: 0.02, 16: 0.04}, evaluation=0.0, checkpoint=0.0, setup=0.0)
    assert budget.predicted_seconds(r, 4, t, 10) == pytest.approx(4 * 0.01 + 4 * 0.02 + 2 * 0.04)


def test_a_budgeted_run_records_its_steps_and_its_rerun_is_the_same_run(tmp_path, monkeypatch, steady):
    # the measurement's result fixed (time_job is tested below): a few tens of steps fit whatever the machine's speed
    windows, setups, reads = [], [], []
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: windows.append(window)
                        or setups.append(setup) or timing(step=0.3, evaluation=0.1))
    from bagoftricks.data import registry
    real = registry.read_split
    monkeypatch.setattr(registry, "read_split", lambda *a, **kw: reads.append(a) or time.sleep(1.5) or real(*a, **kw))
    r = make("train.budget=12s", "train.eval_every=100")
    loop.train(r, tmp_path / "b", progress=False)
    assert windows == [pytest.approx(budget.TIMING_SHARE * 12)]  # each size timed for 1 % of the budget
    # the run is built twice (timed, then run) from one read of each split; the rebuild is predicted without it
    assert sorted(a[2] for a in reads) == ["test", "train"] and setups[0] < 3.0
    monkeypatch.setattr(registry, "read_split", real)
    rec = recipe.load(tmp_path / "b" / "recipe.yaml")
    env = json.loads((tmp_path / "b" / "env.json").read_text())
    assert rec.train.budget == "" and rec.train.steps == env["budget"]["steps"] == env["steps"] > 0
    assert env["budget"]["budget_seconds"] == 12 and set(env["budget"]["step_seconds"]) == {"16"}
    assert env["budget"]["predicted_seconds"] <= 12 * (1 - budget.SAFETY)
    assert "chosen by train.budget 12s" in (tmp_path / "b" / "run.log").read_text()
    loop.train(rec, tmp_path / "again", progress=False)  # the recorded recipe, from scratch
    a, b = weights(tmp_path / "b"), weights(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # train.resume: auto takes the folder as this recipe's run (budget given as "12"), not another budget's
    assert loop.train(make("train.budget=12", "train.eval_every=100", "train.resume=auto"), tmp_path / "b",
                      progress=False)["epoch"] == env["budget"]["epochs"]
    with pytest.raises(UsageError, match=r"train.budget: '12s' there, '20s' here"):
        loop.train(make("train.budget=20s", "train.eval_every=100", "train.resume=auto"), tmp_path / "b",
                   progress=False)


@pytest.mark.parametrize("step_seconds", [0.3, 1.0])  # ~7 epochs of a 4-epoch recipe, then ~2
def test_a_budgeted_step_schedule_drops_at_the_same_share_of_its_run(tmp_path, monkeypatch, steady, step_seconds):
    # kept in absolute epochs, a short budget never dropped the lr (Fashion-MNIST's §2 baseline, drops at epochs 2
    # and 3 of 4, given 60 s: 0.4 epochs at lr 0.1, 23 % on test) and a long one trained mostly at the last rate
    from bagoftricks.engine.runfolder import recorded_asked
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: timing(step=step_seconds, evaluation=0.1))
    asked = ["train.budget=12s", "train.eval_every=100", "train.epochs=4", "schedule.kind=step",
             "schedule.milestones=[2, 3]"]
    loop.train(make(*asked), tmp_path / "b", progress=False)
    rec = recipe.load(tmp_path / "b" / "recipe.yaml")
    n = rec.train.steps
    assert n != 16 and rec.schedule.milestones == pytest.approx((2 * n / 16, 3 * n / 16), rel=1e-5)
    lrs = [derive.scheduled_lr(rec, s, 4) for s in range(n)]
    base = lrs[0]
    assert sorted(set(lrs), reverse=True) == pytest.approx([base, base * 0.1, base * 0.01])  # both drops in the run
    assert lrs.index(min(lrs)) == round(3 * n / 16 * 4)  # the second at three quarters of it
    env = json.loads((tmp_path / "b" / "env.json").read_text())
    assert env["budget"]["milestones"] == [2.0, 3.0]
    assert recorded_asked(tmp_path / "b")["schedule.milestones"] == [2.0, 3.0]
    assert recipe.run_diff(make(*asked), rec, recorded_asked(tmp_path / "b")) == []  # read back as the asked run
    assert "the step schedule's milestones follow it: epochs 2, 3 of the recipe's" in \
        (tmp_path / "b" / "run.log").read_text()
    assert loop.train(make(*asked, "train.resume=auto"), tmp_path / "b", progress=False)["epoch"] == \
        env["budget"]["epochs"]  # train.resume: auto takes the folder as this recipe's run
    # a decay that follows the length by itself (cosine, linear) keeps its milestones, which nothing reads
    cosine = make("train.budget=12s", "train.epochs=4", "schedule.kind=cosine", "schedule.milestones=[2, 3]")
    assert budget.follow_length(cosine, 7, 4).schedule.milestones == (2.0, 3.0)


def test_the_budget_times_the_step_as_the_run_takes_it(tmp_path, monkeypatch, steady):
    # wrapped as the run's (train.compile, DDP) before the timing: an eager timing of a compiled run chose steps
    # for 35 ms where the compiled run then took 95 ms and its compilations (fast-3min: 198 s of a 90 s budget)
    from bagoftricks.engine import setup
    calls = []
    wrap = setup.Training.wrap
    monkeypatch.setattr(setup.Training, "wrap", lambda self: calls.append(("wrap", self.recipe.train.steps)) or
                        wrap(self))
    monkeypatch.setattr(budget, "time_job", lambda job, setup_s, window, agree:
                        calls.append(("time", job.recipe.train.steps)) or timing())
    loop.train(make("train.budget=12s", "train.eval_every=100"), tmp_path / "b", progress=False)
    steps = recipe.load(tmp_path / "b" / "recipe.yaml").train.steps
    assert calls == [("wrap", 0), ("time", 0), ("wrap", steps)]  # the timed build wrapped first, then the run's own


def test_the_timed_job_and_the_run_stop_their_loader_workers_before_the_next_build_and_at_the_end(tmp_path, monkeypatch,
                                                                                                 steady):
    # left to the garbage collector, a per-image loader's persistent workers each stopped at their 5 s poll, some
    # time later: an image folder's budgeted run lost 10 s of a 60 s budget between its timing and its first step
    import multiprocessing as mp
    before = set(mp.active_children())
    workers = lambda: set(mp.active_children()) - before  # noqa: E731

    def time_job(job, setup_s, window, agree):
        next(iter(job.batches(0, 0)))  # the workers started, the epoch left mid-way, as the timing leaves it
        assert workers()
        return timing(step=0.3, evaluation=0.1)

    at_builds, build = [], loop.setup_training
    monkeypatch.setattr(loop, "setup_training", lambda *a, **kw: at_builds.append(len(workers())) or build(*a, **kw))
    monkeypatch.setattr(budget, "time_job", time_job)
    r = make("train.budget=12s", "train.eval_every=100", "data.in_memory=never", "data.workers=2")
    loop.train(r, tmp_path / "b", progress=False)
    assert at_builds == [0, 0] and not workers()
    monkeypatch.setattr(budget, "time_job", lambda job, *a: next(iter(job.batches(0, 0))) and timing(5.0, 30.0))
    with pytest.raises(RecipeError, match="train.budget: 20s is too short"):  # refused after the timing: stopped too
        loop.train(make("train.budget=20s", "data.in_memory=never", "data.workers=2"), tmp_path / "c", progress=False)
    assert not workers()


def test_a_budget_too_short_for_one_step_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: timing(step=5.0, evaluation=30.0))
    with pytest.raises(RecipeError, match="train.budget: 20s is too short on this machine"):
        loop.train(make("train.budget=20s"), tmp_path / "short", progress=False)
    assert not (tmp_path / "short").exists()


def test_a_budget_too_short_for_the_recipe_s_epochs_is_an_error_naming_it(tmp_path, monkeypatch):
    # 1.5 s per step leaves 5 steps of a 12 s budget: 2 epochs of 4 steps, too few for 2 progressive sizes before the
    # full size (and fewer steps only make it worse): refused after the timing, naming the budget, not train.steps
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: timing(step=1.5, sizes=(8, 12, 16)))
    r = make("train.budget=12s", "train.eval_every=100", "data.progressive_sizes=[8, 12]")
    with pytest.raises(RecipeError, match=r"train.budget: 12s leaves time for \d steps on this machine \(2 epoch\(s\) "
                                          r"of 4 steps.*too short for the rest of the recipe: data.progressive_sizes.*"
                                          r"give the run a longer budget, or set data.progressive_sizes for 2 epoch"):
        loop.train(r, tmp_path / "short", progress=False)
    assert not (tmp_path / "short").exists()


def test_extending_a_run_sized_in_steps_is_refused(tmp_path):
    from bagoftricks.engine.extend import extend_run
    loop.train(make("train.steps=5"), tmp_path / "s", progress=False)
    with pytest.raises(UsageError, match="sized in steps"):
        extend_run(tmp_path / "s", 4, tmp_path / "longer")


def test_time_job_times_every_training_size_the_evaluation_and_a_checkpoint():
    from bagoftricks.engine.setup import setup_training
    job = setup_training(make("data.progressive_sizes=[8, 12]", "train.epochs=3"), torch.device("cpu"))
    t = budget.time_job(job, 0.25)
    assert set(t.step) == {8, 12, 16} and all(v > 0 for v in t.step.values())
    assert t.evaluation > 0 and t.checkpoint > 0 and t.setup == 0.25


class _SlowSteps:
    """A stand-in job whose steps each take 5 ms and are counted."""

    def __init__(self):
        self.calls, self.device = 0, torch.device("cpu")
        self.step = self
        self.module = torch.nn.Identity()

    def batches(self, epoch, first):
        return iter(range(7))  # an epoch shorter than the timing: started again

    def __call__(self, batch, epoch, s):
        self.calls += 1
        time.sleep(0.005)


def test_steps_are_timed_over_a_window_of_seconds_not_only_a_dozen_steps():
    job = _SlowSteps()
    per_step, timed = budget._time_steps(job, 0, window=0.0)
    assert timed == budget.TIMED_STEPS and job.calls == budget.WARM_STEPS + budget.TIMED_STEPS
    assert per_step >= 0.005
    job = _SlowSteps()
    per_step, timed = budget._time_steps(job, 0, window=1.0)  # >= 1 s of 5 ms steps: far more than a dozen
    assert timed > 3 * budget.TIMED_STEPS and job.calls == budget.WARM_STEPS + timed
    assert per_step * timed >= 1.0


class _SizedJob(_SlowSteps):
    """_SlowSteps with what time_job reads besides the steps: a recipe's sizes, an evaluation, a checkpoint."""

    def __init__(self, steps_ms):
        super().__init__()
        self.recipe = make("data.progressive_sizes=[8, 12]", "train.epochs=4")
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.epochs, self.steps_ms = [], steps_ms

    def eval_seconds(self):
        return 0.01

    def __call__(self, batch, epoch, s):
        self.epochs.append(epoch)
        time.sleep(self.steps_ms[epoch] / 1000)


def test_the_sizes_are_timed_in_turn_each_over_several_windows():
    # one window per size read a 2-core EPYC's 15-minute run 1.1-1.2x fast: its speed swings in phases of 10-20 s
    job = _SizedJob({0: 2, 1: 4, 2: 8})
    t = budget.time_job(job, 0.0, window=0.3)
    turns = [e for i, e in enumerate(job.epochs) if i == 0 or job.epochs[i - 1] != e]
    assert turns == [0, 1, 2] * budget.ROUNDS  # 8, 12, 16 px, then again
    assert set(t.step) == {8, 12, 16} and t.timed_steps[16] == sum(e == 2 for e in job.epochs) - 2 * budget.ROUNDS
    assert t.step[8] < t.step[12] < t.step[16] and t.step[16] >= 0.008  # each size at its own cost
    assert all(t.step[size] * t.timed_steps[size] >= 0.3 for size in t.step)  # the window, in all
    # each window's own step time is kept (env.json: how much the machine's speed swung during the timing)
    assert {size: len(r) for size, r in t.rounds.items()} == dict.fromkeys((8, 12, 16), budget.ROUNDS)
    assert all(min(t.rounds[size]) <= t.step[size] <= max(t.rounds[size]) for size in t.step)


# ----------------------------------------------------------------------------- re-sizing as the run goes
def test_a_re_size_spreads_the_rest_of_the_schedule_over_the_new_length():
    planned = make("train.steps=40", "tricks.lookahead_every=2")
    shorter = make("train.steps=24", "train.resized_at=[8]", "train.resized_from=[40]", "tricks.lookahead_every=2")
    longer = make("train.steps=60", "train.resized_at=[8]", "train.resized_from=[40]")
    lr = lambda r, s: derive.scheduled_lr(r, s, 4)  # noqa: E731
    for r in (shorter, longer):  # the steps before the re-size are where they were, bit for bit
        assert [lr(r, s) for s in range(9)] == [lr(planned, s) for s in range(9)]
    assert derive.schedule_position(shorter, 8, 4) == (8, 40) and derive.schedule_position(shorter, 23, 4) == (39, 40)
    assert derive.schedule_position(longer, 59, 4) == (39, 40)  # the last step is the schedule's last
    assert lr(shorter, 23) == lr(longer, 59) == lr(planned, 39) == 0.0
    # re-sized to one more step (a machine far slower than timed): that step is the schedule's last
    one = make("train.steps=9", "train.resized_at=[8]", "train.resized_from=[40]")
    assert lr(one, 8) == 0.0 and derive.schedule_position(one, 8, 4) == (39, 40)
    rest = [lr(shorter, s) for s in range(8, 24)]
    assert rest == sorted(rest, reverse=True) and lr(shorter, 16) < lr(planned, 16)  # squeezed, still decaying
    assert lr(longer, 16) > lr(planned, 16)                                           # stretched
    # a second re-size continues from where the first had brought the schedule
    twice = make("train.steps=30", "train.resized_at=[8, 16]", "train.resized_from=[40, 24]")
    assert [derive.schedule_position(twice, s, 4) for s in range(17)] == \
        [derive.schedule_position(shorter, s, 4) for s in range(17)]
    assert derive.schedule_position(twice, 29, 4)[0] == pytest.approx(39)
    # mix-off epochs count back from the length each epoch was trained for; the lookahead ramp ends at its end
    assert [derive.planned_steps(twice, e, 4) for e in range(8)] == [40, 40, 24, 24, 30, 30, 30, 30]
    at, total = derive.schedule_position(shorter, 23, 4)
    assert tricks.lookahead_decay(at + 1, total, 0.77, 3.0) == 0.77


def test_a_re_size_within_the_warmup_keeps_its_ramp_and_spreads_the_rest_from_its_end():
    warm = ("tricks.warmup_epochs=2", "schedule.kind=linear")  # 8 warmup steps of 4-step epochs
    planned = make("train.steps=40", *warm)
    for steps in (24, 60):  # squeezed and stretched after step 3, within the warmup
        r = make(f"train.steps={steps}", "train.resized_at=[3]", "train.resized_from=[40]", *warm)
        lr = [derive.scheduled_lr(r, s, 4) for s in range(steps)]
        assert lr[:9] == [derive.scheduled_lr(planned, s, 4) for s in range(9)]  # the ramp to its peak at step 8
        assert lr[8] == max(lr) and lr[-1] == derive.scheduled_lr(planned, 39, 4)  # the decay: from 8 to the end
        assert [derive.schedule_position(r, s, 4)[0] for s in (8, steps - 1)] == [8, pytest.approx(39)]
        decay = [b - a for a, b in zip(lr[8:], lr[9:])]
        assert max(decay) - min(decay) < 1e-9  # linear: spread evenly over the new length
    # a second re-size after the warmup goes on from where the first brought the schedule
    twice = make("train.steps=30", "train.resized_at=[3, 16]", "train.resized_from=[40, 24]", *warm)
    once = make("train.steps=24", "train.resized_at=[3]", "train.resized_from=[40]", *warm)
    assert [derive.schedule_position(twice, s, 4) for s in range(17)] == \
        [derive.schedule_position(once, s, 4) for s in range(17)]
    assert derive.schedule_position(twice, 29, 4)[0] == pytest.approx(39)
    # two re-sizes within the warmup, the first to end one step after it: the second's length holds from its end
    back = make("train.steps=40", "train.resized_at=[2, 3]", "train.resized_from=[40, 9]", *warm)
    assert [derive.scheduled_lr(back, s, 4) for s in range(40)] == [derive.scheduled_lr(planned, s, 4)
                                                                      for s in range(40)]


def test_re_sizes_are_recorded_pairs_checked_against_the_length():
    with pytest.raises(RecipeError, match=r"train.resized_at: must pair with train.resized_from \[\]: .*got \[8\]"):
        make("train.steps=24", "train.resized_at=[8]")
    with pytest.raises(RecipeError, match=r"train.resized_at: is recorded by train.budget"):
        make("train.resized_at=[8]", "train.resized_from=[40]")
    with pytest.raises(RecipeError,
                   match=r"train.resized_at: re-sizes at step 8 a run that had ended \(train.resized_from: 6 steps"):
        make("train.steps=24", "train.resized_at=[8]", "train.resized_from=[6]")
    with pytest.raises(RecipeError, match=r"train.resized_from: re-sizes at step 8 to 8 steps"):
        make("train.steps=8", "train.resized_at=[8]", "train.resized_from=[40]")
    with pytest.raises(RecipeError, match=r"train.resized_at: expected a list of steps"):
        make("train.resized_at=soon")


def test_the_budget_re_sizes_the_rest_when_the_machine_runs_slower_or_faster_than_its_timing():
    t = timing(step=0.1, evaluation=1.0, checkpoint=0.0, setup=0.5)
    n = budget.steps_within(make("train.budget=10s", "train.eval_every=100"), 4, t, 10 * (1 - budget.SAFETY))
    r = make(f"train.steps={n}", "train.eval_every=100")
    t.setup = 0.0  # spent: the loop's timing_of leaves it out
    for done in (8, 6):  # after 2 epochs at the timing's speed; within the second epoch
        elapsed = 0.5 + done * 0.1
        assert budget.resize(r, 4, t, done, 1.0, elapsed, 10.0) is None  # as timed: the plan holds
        assert budget.resize(r, 4, t, done, 1.05, elapsed, 10.0) is None  # 5 % slower: within the margin
        margin = budget.SAFETY * (10.0 - elapsed)
        for speed in (1.5, 0.6):  # slower, faster
            sized, rec = budget.resize(r, 4, t, done, speed, elapsed, 10.0)
            m = sized.train.steps
            assert (sized.train.resized_at, sized.train.resized_from) == ((done,), (n,))
            end = lambda k, x=speed, d=done, e=elapsed: e + (k - d) * 0.1 * x + 1.0 * x  # noqa: E731  (steps, eval)
            assert end(m) <= 10.0 - margin < end(m + 1)  # the most steps that end by the budget less the margin
            assert (m < n) == (speed > 1) and rec["steps_before"] == n
            assert rec["predicted_seconds"] == pytest.approx(end(m)) and (rec["at_step"], rec["epoch"]) == (done, 2)
    # a re-size never leaves fewer epochs than the recipe's mix-off epochs (or sizes, or warmup) need
    mixing = make(f"train.steps={n}", "train.eval_every=100", "tricks.mixup_alpha=0.2", "tricks.mix_off_epochs=5")
    assert budget.resize(mixing, 4, t, 8, 10.0, 1.3, 10.0)[0].train.steps == 17  # 5 epochs, the last 1 step
    assert budget.resize(mixing, 4, t, 6, 10.0, 1.3, 10.0)[0].train.steps == 17  # ... within an epoch too
    assert budget.resize(r, 4, t, n, 50.0, 9.0, 10.0) is None  # after the last step: nothing
    # within an epoch, the prediction counts that epoch's steps left, its evaluation and checkpoint (and the rest)
    t.checkpoint = 0.25
    assert budget.predicted_seconds(r, 4, t, 14, 6) == pytest.approx(8 * 0.1 + 1.0 + 3 * 0.25)
    assert budget.predicted_seconds(r, 4, t, 14, 8) == pytest.approx(6 * 0.1 + 1.0 + 2 * 0.25)


def _slowed_at(monkeypatch, step, slower=2.0):
    """The machine runs the steps `slower` times slower than the (faked) timing after `step` global steps; the look
    after it re-sizes for real, the later ones keep the length (their speed is the re-sized plan's)."""
    real = budget.resize
    monkeypatch.setattr(budget, "resize", lambda r, spe, t, done, _, elapsed, b:
                        real(r, spe, t, done, slower, 1.0 + step * slower * t.step[16], b) if done == step else None)
    monkeypatch.setattr(budget, "LOOK_SHARE", 0.0)  # a look after every step, however short
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: timing(step=0.3, evaluation=0.1))


@pytest.mark.parametrize("at", [4, 6])  # an epoch's end; within the second epoch
def test_a_re_sized_run_records_the_re_size_and_its_rerun_is_the_same_run(tmp_path, monkeypatch, at):
    _slowed_at(monkeypatch, at)
    asked = ("train.budget=12s", "train.eval_every=100", "train.keep_checkpoints=100")
    loop.train(make(*asked), tmp_path / "b", progress=False)
    rec = recipe.load(tmp_path / "b" / "recipe.yaml")
    env = json.loads((tmp_path / "b" / "env.json").read_text())
    first = env["budget"]["steps"]  # what the start's timing chose
    assert rec.train.resized_at == (at,) and rec.train.resized_from == (first,) and at < rec.train.steps < first
    assert env["steps"] == rec.train.steps == env["budget"]["resized"][0]["steps"]
    assert env["budget"]["resized"][0]["slower"] == pytest.approx(2.0)
    assert len(read_jsonl(tmp_path / "b" / "metrics.jsonl")) == derive.run_epochs(rec, 4)
    assert f"re-sized from {first} to {rec.train.steps} steps" in (tmp_path / "b" / "run.log").read_text()
    if at % 4:  # a re-size within an epoch is in a checkpoint at its step
        held = [load_checkpoint(c) for c in list_checkpoints(tmp_path / "b")]
        assert any(c["global_step"] == at and recipe.from_dict(c["recipe"]) == rec for c in held)
    loop.train(rec, tmp_path / "again", progress=False)  # the recorded recipe, from scratch
    a, b = weights(tmp_path / "b"), weights(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # train.resume: auto takes the folder as this recipe's run, the re-sizes included
    again = loop.train(make(*asked, "train.resume=auto"), tmp_path / "b", progress=False)
    assert again["epoch"] == derive.run_epochs(rec, 4)


def test_a_re_size_within_the_last_epochs_can_end_the_run_within_an_epoch(tmp_path, monkeypatch):
    _slowed_at(monkeypatch, 9, slower=50.0)  # after step 9 (epoch 3's first): one more step, the run's last
    final = loop.train(make("train.budget=12s", "train.eval_every=100"), tmp_path / "b", progress=False)
    rec = recipe.load(tmp_path / "b" / "recipe.yaml")
    assert (rec.train.steps, rec.train.resized_at) == (10, (9,)) and final["epoch"] == 3 and "val_top1" in final
    assert load_checkpoint(list_checkpoints(tmp_path / "b")[-1])["global_step"] == 10
    loop.train(rec, tmp_path / "again", progress=False)
    a, b = weights(tmp_path / "b"), weights(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stop_at,at", [(2, 4), (6, 4), (5, 6), (7, 6)])  # before / after a re-size (epoch end, within)
def test_a_budgeted_run_stopped_and_resumed_re_sizes_as_it_goes_and_its_rerun_is_the_same_run(tmp_path, monkeypatch,
                                                                                              stop_at, at):
    _slowed_at(monkeypatch, at)
    with pytest.raises(TrainingInterrupted):
        loop.train(make("train.budget=12s", "train.eval_every=100"), tmp_path / "cut", progress=False,
                   stop_after_steps=stop_at)
    state = load_checkpoint(list_checkpoints(tmp_path / "cut")[-1])
    assert recipe.from_dict(state["recipe"]).train.resized_at == (() if stop_at < at else (at,))
    assert state["epoch_acc"]["budget_spent"] > 0  # where the resume goes on against the budget from
    loop.train(recipe.load(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True, progress=False)
    rec = recipe.load(tmp_path / "cut" / "recipe.yaml")
    assert rec.train.resized_at == (at,)  # re-sized by the first attempt, or by the resumed one at the same step
    env = json.loads((tmp_path / "cut" / "env.json").read_text())
    assert [r["at_step"] for r in env["budget"]["resized"]] == [at] and env["steps"] == rec.train.steps
    if stop_at < at:
        assert "it goes on against the rest" in (tmp_path / "cut" / "run.log").read_text()
    loop.train(rec, tmp_path / "again", progress=False)
    a, b = weights(tmp_path / "cut"), weights(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_budgeted_run_counts_what_its_earlier_attempts_spent(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "LOOK_SHARE", 0.0)  # a look after every step
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: timing(step=0.3, evaluation=0.1))
    looks = []
    monkeypatch.setattr(budget, "resize", lambda r, spe, t, done, slower, elapsed, b: looks.append((done, elapsed)))
    monkeypatch.setattr(budget, "held", lambda pace: {"budget_spent": 11.0} if pace else {})  # as if 11 s of 12 went
    with pytest.raises(TrainingInterrupted):
        loop.train(make("train.budget=12s", "train.eval_every=100"), tmp_path / "cut", progress=False,
                   stop_after_steps=5)
    looks.clear()
    t0 = time.time()
    final = loop.train(recipe.load(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True, progress=False)
    assert final["budget_spent"] == 11.0  # final.json: the budget the run spent, every attempt's
    assert looks[0][0] == 6 and all(11.0 <= e <= 11.0 + time.time() - t0 for _, e in looks)  # from step 6 on
    assert "resumed with 11 s of the budget spent" in (tmp_path / "cut" / "run.log").read_text()


def test_a_resume_goes_on_from_the_budget_and_the_seconds_its_checkpoint_holds(tmp_path):
    from bagoftricks.engine.distributed import DistInfo
    rec = {"budget": "20s", "step_seconds": {"16": 0.1}, "eval_seconds": 1.0, "checkpoint_seconds": 0.0,
           "budget_seconds": 20.0}
    (tmp_path / "env.json").write_text(json.dumps({"steps": 40, "budget": rec}))
    state = {"epoch": 2, "step": 3, "epoch_acc": {"seconds": 0.5, "budget_spent": 7.0}}
    pace = budget.resumed(tmp_path, state, 100.0, DistInfo())
    assert (pace.record, pace.origin, pace.budget) == (rec, 93.0, 20.0)
    assert pace.seen == (2, 3, 0.5)  # its first look takes the steps after the third of epoch 2, and their seconds
    assert budget.resumed(tmp_path, dict(state, step=0), 100.0, DistInfo()).seen == (2, 0, 0.0)  # at an epoch's start
    assert budget.resumed(tmp_path, dict(state, epoch_acc={"seconds": 0.5}), 100.0, DistInfo()) is None  # no budget
    (tmp_path / "env.json").write_text(json.dumps({"steps": 40}))
    assert budget.resumed(tmp_path, state, 100.0, DistInfo()) is None


def test_the_budget_looks_at_the_pace_of_steps_that_ran_for_a_share_of_it(monkeypatch):
    from bagoftricks.engine.distributed import DistInfo
    seen = []
    monkeypatch.setattr(budget, "resize", lambda r, spe, t, done, slower, elapsed, b: seen.append((done, slower)))
    rec = {"step_seconds": {"16": 0.1}, "eval_seconds": 1.0, "checkpoint_seconds": 0.0, "budget_seconds": 20.0}
    pace, r = budget.Pace(rec, time.time()), make("train.steps=400", "train.eval_every=100")
    assert pytest.approx(1.0) == budget.LOOK_SHARE * 20  # a look once the steps since the last ran for 1 s
    assert pace.every == 3  # ... asked every 3 steps within an epoch: a quarter of 1 s at the timing's speed
    for epoch in range(5):  # epochs of 4 steps, timed at 0.4 s, that ran 0.8 s, then 0.6 s
        pace.resize(r, 4, epoch, 4, 0.8 if epoch < 2 else 0.6, DistInfo())
    assert seen == [(8, pytest.approx(2.0)), (16, pytest.approx(1.5))]  # epochs 1-2 together, then 3-4
    seen.clear()  # within an epoch the loop hands its steps and seconds so far: the look takes what is new
    for steps, seconds in ((1, 0.2), (3, 1.3), (4, 1.5)):
        pace.resize(r, 4, 6, steps, seconds, DistInfo())
    assert seen == [(27, pytest.approx(1.9 / 0.7))]  # epoch 4's 0.6 s (4 steps) left over, then 3 steps in 1.3 s
