"""train.budget: a run sized to the machine it runs on.

A recipe with `train.budget` is timed at the start of its run: training steps at every image size the run
trains at (progressive resizing) — at least TIMED_STEPS, and for at least TIMING_SHARE of the budget in
ROUNDS windows, the sizes in turn, so that the timing spans the phases of seconds in which a shared machine's
speed swings (measured 2x on a 2-core Xeon: a dozen steps catch one phase) —, a slice of the evaluation, a
checkpoint write. From those, and the seconds already spent (start-up, data, this timing; counted from the
process's start on the command line, from the call in Python: bagoftricks.clock), `steps_within` picks the
largest number of steps N whose whole run — training, every evaluation, every checkpoint, the set-up of the
run proper — is predicted to end within the budget less a safety margin (SAFETY). The job used for timing
is then thrown away and the run is built again from the recipe with `train.steps: N` (and no budget),
exactly as a rerun of the run folder's recipe.yaml builds it: the run is that recipe's, bit for bit on
CPU, and `--resume` continues it. The measurement is kept in env.json ("budget") and named in run.log.

A step schedule's drops follow the length the budget chose (`follow_length`): milestones at epochs 2 and 3 of a
4-epoch recipe fall at half and three quarters of the budgeted run, whether the budget leaves 0.4 epochs or 12
(kept absolute, a short budget never dropped the lr — Fashion-MNIST's §2 baseline in 60 s ended at lr 0.1 and
23 % — and a long one trained most of its run at the last rate). recipe.yaml records the milestones so moved,
env.json the ones asked. What happens at the start of a run (warmup, progressive sizes, a stem's trained bias)
and `tricks.mix_off_epochs` stay in epochs of the data, as the recipe was measured with them; a budget too short
for them is refused.

As the run goes, at the end of an epoch and every few steps within one, once the steps since the last look ran for
LOOK_SHARE of the budget (`Pace`), `resize` predicts its end again from the start's timing scaled by how much slower
(or faster) those steps ran than their timing — a shared machine slowed down 1.3x minutes after its timing and a
15-minute run ended 7.7 % over —, and re-sizes the rest of the run when that end has left a band below the budget:
train.steps changes, and train.resized_at / resized_from record after which step and from what length, so that the
schedule's rest is spread over the new length (`derive.schedule_position`) and a rerun of recipe.yaml is still the
run. A re-size is in a checkpoint of its step (the epoch's, or one written there).

A resumed run goes on against the same budget (`resumed`): each checkpoint holds the budget's seconds spent by then
(the first process's start-up and timing, every attempt's run up to it), the resumed process counts its own from its
start on top of them (its start-up included), and it looks and re-sizes as the first one did — on a slower or busier
machine too, the timing scaled by how its steps run. The time between a checkpoint and the stop that followed it, and
the time the run was down, are not counted: the first is trained again, the second is not the run's.

Under torchrun the ranks are timed together, each stepping while any of them wants another step (every step
all-reduces), and rank 0's choice, or its refusal, is every rank's (`fit_ranks`).

Which length wins: `train.budget` sets `train.steps`, which wins over `train.epochs`.
"""
from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bagoftricks import data as bdata
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import check_length, length_problem, precision_note, run_epochs, run_steps
from bagoftricks.errors import RecipeError
from bagoftricks.files import read_json_object
from bagoftricks.recipe import Recipe, budget_seconds

# fraction of the budget kept free: a shared machine's speed drifts by 10-25 % over minutes, and the timing sees
# seconds of it. Budgeted runs on two CPU kinds ended at 0.90-1.16x their predicted time (median 1.05; an AMD
# EPYC's 28 px steps 12-25 % slower in the run than in its timing): at 0.12 the slowest ends at 1.02x the budget
SAFETY = 0.12
WARM_STEPS = 2         # untimed steps at each size (first-use allocations, kernel selection)
TIMED_STEPS = 12       # timed steps at each size, at least
TIMING_SHARE = 0.01    # ... and timed for at least this fraction of the budget at each size (6 s of 10 min)
MAX_TIMED_STEPS = 2000  # ... but never more steps than this at one size
# each size is timed in this many windows, the sizes in turn (20, 24, 28, 20, 24, 28, ...), so that a size's timing
# spans the others' and samples several of the machine's phases: a 2-core EPYC's 10-20 s phases swing its step by
# 12 %, and one 9 s window per size read a 15-minute run's steps 1.1-1.2x fast (it took 1.22x its prediction)
ROUNDS = 3
# at an epoch's end a budgeted run predicts its end again from the speed of its latest steps, and re-sizes its
# rest when that end leaves [budget - 2 m, budget - m / 2], to end by budget - m (`resize`); m: SAFETY of the
# seconds left, at least this share of the budget
MIN_MARGIN = 0.03
# ... looking once the steps since its last look ran this share of the budget (or more), at an epoch's end or within
# one: 6 s of a 2-minute run, whose last epoch (a quarter of it) ran 1.35x slower than the one before and ended the
# run 6.7 % over when only epochs' ends were looked at
LOOK_SHARE = 0.05
# ... asked this many times per LOOK_SHARE of the budget (at the timing's slowest step), so that a look comes soon
# after its stretch has run: asked once per stretch, a stretch of 0.95 LOOK_SHARE waited for the next ask, looks came
# every 11-12 s of a 2-minute run, and a busy core from 85 s was first judged at 99 s (the run ended 5.7 % over)
ASKS = 4


@dataclass
class Timing:
    """What the start of a run measured (seconds)."""
    step: dict[int, float] = field(default_factory=dict)  # one training step, per training image size
    evaluation: float = 0.0    # one whole evaluation (plain, EMA and TTA, as the run does it)
    checkpoint: float = 0.0    # one checkpoint written
    setup: float = 0.0         # building the run (data, model, optimizer) once more
    timed_steps: dict[int, int] = field(default_factory=dict)  # how many steps each size's time is the mean of
    rounds: dict[int, list[float]] = field(default_factory=dict)  # each size's step in each of its ROUNDS windows


def epoch_size(r: Recipe, epoch: int) -> int:
    """The training image size of epoch `epoch` (progressive resizing)."""
    return tricks.epoch_size(r.data.progressive_sizes, epoch, r.data.image_size)


def predicted_seconds(r: Recipe, steps_per_epoch: int, timing: Timing, n: int, start: int = 0) -> float:
    """Seconds a run of `n` steps takes after the timing (from its global step `start` on, within an epoch or at its
    start): set-up, its steps at each epoch's size, its evaluations (every train.eval_every epochs and after the
    last) and checkpoints (each epoch's end, and every train.checkpoint_every_steps)."""
    tr = r.train
    epochs, first = -(-n // steps_per_epoch), start // steps_per_epoch
    total = timing.setup
    for e in range(first, epochs):
        k = min(steps_per_epoch, n - e * steps_per_epoch) - max(0, start - e * steps_per_epoch)
        total += k * timing.step[epoch_size(r, e)]
        if (e + 1) % tr.eval_every == 0 or e + 1 == epochs:
            total += timing.evaluation
    every = tr.checkpoint_every_steps
    extra = n // every - start // every if every else 0
    return total + (epochs - first + extra) * timing.checkpoint


def _last(fits: Callable[[int], bool], lo: int, what: str) -> int:
    """The largest n >= lo with fits(n), for a `fits` true up to some n and false after it; lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    hi = max(2 * lo, 1)
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 10**9:
            raise RecipeError(f"train.budget: {what} is more than this run could use")
    while hi - lo > 1:  # the last n that fits lies in [lo, hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def steps_within(r: Recipe, steps_per_epoch: int, timing: Timing, seconds: float) -> int:
    """The largest number of steps whose predicted run takes at most `seconds` (0 when not even one step fits)."""
    return _last(lambda n: predicted_seconds(r, steps_per_epoch, timing, n) <= seconds, 1, r.train.budget)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _alone(more: bool) -> bool:
    return more


def _time_steps(job: Any, epoch: int, window: float = 0.0, least: int = TIMED_STEPS,
                most: int = MAX_TIMED_STEPS, agree: Callable[[bool], bool] = _alone) -> tuple[float, int]:
    """(seconds per training step, steps timed) of `job` at epoch `epoch`'s image size: after WARM_STEPS untimed
    steps, the mean over at least `least` steps and at least `window` seconds (`most` steps at most). Past
    `least`, `agree` turns this process's wish for another step into the run's (every rank of a DDP run must
    take the same steps: each one all-reduces)."""
    batches = iter(job.batches(epoch, 0))
    job.step.module.train()
    t0, s, elapsed = 0.0, 0, 0.0
    while s < WARM_STEPS + least or agree(elapsed < window and s < WARM_STEPS + most):
        if s == WARM_STEPS:
            _sync(job.device)
            t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # an epoch shorter than the timing: start it again
            batches = iter(job.batches(epoch, 0))
            batch = next(batches)
        job.step(batch, epoch, s)
        s += 1
        if s > WARM_STEPS:
            elapsed = time.perf_counter() - t0  # a host clock: on a GPU the queue may run ahead until the sync
    _sync(job.device)
    timed = s - WARM_STEPS
    return (time.perf_counter() - t0) / timed, timed


def time_job(job: Any, setup_seconds: float, window: float = 0.0, agree: Callable[[bool], bool] = _alone) -> Timing:
    """Time `job`'s steps at every size its run trains at (each for at least `window` seconds in all, in ROUNDS
    windows, the sizes in turn; `agree`: see _time_steps), its evaluation and a checkpoint. The job's weights
    change: it is for timing only."""
    r = job.recipe
    timing = Timing(setup=setup_seconds)
    first = {}  # each size, at the first epoch that trains at it
    for e, size in enumerate([*r.data.progressive_sizes, r.data.image_size]):
        first.setdefault(size, e)
    spent = dict.fromkeys(first, 0.0)
    for _ in range(ROUNDS):
        for size, e in first.items():
            per_step, n = _time_steps(job, e, window / ROUNDS, -(-TIMED_STEPS // ROUNDS), MAX_TIMED_STEPS // ROUNDS,
                                      agree)
            spent[size] += per_step * n
            timing.timed_steps[size] = timing.timed_steps.get(size, 0) + n
            timing.rounds.setdefault(size, []).append(per_step)
    timing.step = {size: spent[size] / timing.timed_steps[size] for size in first}
    timing.evaluation = job.eval_seconds()
    t0 = time.perf_counter()
    torch.save({"model": job.model.state_dict(), "optimizer": job.optimizer.state_dict()}, io.BytesIO())
    timing.checkpoint = time.perf_counter() - t0
    return timing


def build_sized(r: Recipe, build: Callable, device: torch.device, dinfo: bdist.DistInfo, state: dict | None,
                origin: float, folder: Path | None = None) -> tuple[Any, Pace | None]:
    """(the run's job, a budgeted run's Pace or None), `build(recipe, device, dinfo, state)` making jobs: a fresh
    budgeted run is timed on a first build wrapped as the run's (compiled, DDP; torch.compile's cache serves the
    rebuild), then rebuilt with the fitted train.steps (rank 0's) from the data splits the first build read; a run
    resumed from checkpoint `state` in its `folder` goes on against its budget (`resumed`; no folder: a new run
    started from another's checkpoint, which has none)."""
    t0, record = time.perf_counter(), None
    with bdata.reuse_splits() as read:  # the rebuild takes the splits the first build read
        job = build(r, device, dinfo, state)
        if state is None and r.train.budget:
            try:
                job.wrap()
                sized, record = fit_ranks(r, job, time.perf_counter() - t0 - read.seconds, origin, dinfo, device)
            finally:  # the timed job's weights moved: the run starts from a new build
                job.close()
                job = None
            job = build(sized, device, dinfo, state)
    check_length(job.recipe, job.steps_per_epoch)
    if state is not None:
        return job, resumed(folder, state, origin, dinfo) if folder is not None else None
    return job, Pace(record, origin) if record is not None else None


class Pace:
    """A budgeted run's re-sizes (`resize`): the steps' time against their timing, since the last look. The loop
    asks at each epoch's end and every `every` steps within an epoch (LOOK_SHARE / ASKS of the budget at the timing's
    slowest step), so that a slowdown in a run's last epoch, a quarter of a 2-minute run, is caught too. The budget
    counts from `origin` (time.time(); a resumed run's is moved back by what its earlier attempts spent)."""

    def __init__(self, record: dict, origin: float):
        self.record = record  # the budget's (env.json's "budget"): its re-sizes are appended to it
        self.timing, self.budget, self.origin = timing_of(record), float(record["budget_seconds"]), origin
        self.every = max(1, math.ceil(LOOK_SHARE * self.budget / ASKS / max(self.timing.step.values())))
        self.seconds = self.timed = 0.0
        self.seen = (-1, 0, 0.0)  # (epoch, its steps, their seconds) at the last call

    def resize(self, r: Recipe, steps_per_epoch: int, epoch: int, steps: int, seconds: float,
               dinfo: bdist.DistInfo) -> tuple[Recipe, dict] | None:
        """In epoch `epoch`, whose first `steps` steps took `seconds` (rank 0's clock, its outcome every rank's): the
        run re-sized, or None. It looks once the steps since its last look ran for LOOK_SHARE of the budget (a few
        steps are a noisy measure of the machine's speed)."""
        out = None
        if dinfo.is_main:
            _, k, t = self.seen if self.seen[0] == epoch else (epoch, 0, 0.0)
            self.seen = (epoch, steps, seconds)
            self.seconds += seconds - t
            self.timed += (steps - k) * self.timing.step[epoch_size(r, epoch)]
            if self.seconds >= LOOK_SHARE * self.budget and self.timed > 0:
                out = resize(r, steps_per_epoch, self.timing, epoch * steps_per_epoch + steps,
                             self.seconds / self.timed, time.time() - self.origin, self.budget)
                self.seconds = self.timed = 0.0
        return bdist.broadcast_object(out, dinfo)


def held(pace: Pace | None) -> dict:
    """What a checkpoint (for a resume to go on from: `resumed`) and final.json hold of a budgeted run's budget: the
    seconds it spent so far, every attempt's up to now; {} for a run without a budget."""
    return {} if pace is None else {"budget_spent": time.time() - pace.origin}


def resumed(out: Path, state: dict, origin: float, dinfo: bdist.DistInfo) -> Pace | None:
    """The Pace of a run resumed in folder `out` from checkpoint `state`, its process started at `origin`: its budget
    (env.json's "budget") counts from `origin` less the seconds the checkpoint says were spent, and its first look
    only the steps this process takes. None for a run without a budget (or a checkpoint written before checkpoints
    held the seconds spent). Rank 0 reads the folder; every rank gets its answer."""
    acc, record = state.get("epoch_acc", {}), None
    if "budget_spent" not in acc:
        return None
    if dinfo.is_main:
        record = read_json_object(out / "env.json").get("budget") or None
    record = bdist.broadcast_object(record, dinfo)
    if record is None:
        return None
    pace = Pace(record, origin - float(acc["budget_spent"]))
    step = int(state["step"])  # within epoch state["epoch"], whose steps so far took acc["seconds"]
    pace.seen = (int(state["epoch"]), step, float(acc.get("seconds", 0.0)) if step else 0.0)
    return pace


def fit_ranks(r: Recipe, job: Any, setup_seconds: float, origin: float, dinfo: bdist.DistInfo,
              device: torch.device) -> tuple[Recipe, dict]:
    """`fit` on every rank of a run: the ranks time their steps together (one keeps stepping while any wants to)
    and rank 0's outcome, the fitted recipe and its record or the RecipeError, is every rank's."""
    if not dinfo.enabled:
        return fit(r, job, setup_seconds, origin)

    def agree(more: bool) -> bool:
        return bdist.reduce_max([float(more)], dinfo, device)[0] > 0

    try:
        outcome: Any = fit(r, job, setup_seconds, origin, agree)
    except RecipeError as e:
        outcome = e
    outcome = bdist.broadcast_object(outcome, dinfo)
    if isinstance(outcome, RecipeError):
        raise outcome
    return outcome


def fit(r: Recipe, job: Any, setup_seconds: float, origin: float,
        agree: Callable[[bool], bool] = _alone) -> tuple[Recipe, dict]:
    """The recipe of the run proper (train.steps fitted to train.budget, the budget cleared) and the record of
    the measurement for env.json; the budget counts from `origin` (time.time(), see bagoftricks.clock). A
    budget too small for a single step is a RecipeError. `agree`: see _time_steps."""
    budget = budget_seconds(r.train.budget)
    timing = time_job(job, setup_seconds, TIMING_SHARE * budget, agree)
    spent = time.time() - origin
    available = budget * (1.0 - SAFETY) - spent
    spe = job.steps_per_epoch
    n = steps_within(r, spe, timing, available)
    if n < 1:
        raise RecipeError(f"train.budget: {r.train.budget} is too short on this machine: {spent:.0f} s went to "
                          f"start-up and timing, and one step with its evaluation needs "
                          f"{predicted_seconds(r, spe, timing, 1):.0f} s more")
    sized = follow_length(r, n, spe)
    problem = length_problem(sized, spe)  # fewer steps only make it worse: the budget is too short for the recipe
    if problem:
        slow = precision_note(job.recipe.train.precision, job.device)  # as the build resolved it
        raise RecipeError(f"train.budget: {r.train.budget} leaves time for {n} steps on this machine "
                          f"({run_epochs(sized, spe)} epoch(s) of {spe} steps, {spent:.0f} s spent on start-up and "
                          f"timing), too short for the rest of the recipe: {problem}; give the run a longer budget, or "
                          f"set {problem.split(':', 1)[0]} for {run_epochs(sized, spe)} epoch(s)"
                          + (f" ({slow})" if slow else ""))
    record = {"budget": r.train.budget, "budget_seconds": budget, "safety": SAFETY, "spent_before_run": spent,
              "step_seconds": {str(k): v for k, v in timing.step.items()},
              "timed_steps": {str(k): v for k, v in timing.timed_steps.items()},
              "step_seconds_by_round": {str(k): v for k, v in timing.rounds.items()}, "eval_seconds": timing.evaluation,
              "checkpoint_seconds": timing.checkpoint, "setup_seconds": timing.setup, "steps": n,
              "epochs": run_epochs(sized, spe), "predicted_seconds": spent + predicted_seconds(r, spe, timing, n)}
    if sized.schedule.milestones != r.schedule.milestones:
        record["milestones"] = list(r.schedule.milestones)  # asked; recipe.yaml holds the moved ones
    return sized, record


def timing_of(record: dict) -> Timing:
    """The Timing behind a budget's record (env.json's "budget"), the set-up left out: it is spent."""
    return Timing(step={int(k): float(v) for k, v in record["step_seconds"].items()},
                  evaluation=float(record["eval_seconds"]), checkpoint=float(record["checkpoint_seconds"]))


def resize(r: Recipe, steps_per_epoch: int, timing: Timing, done: int, slower: float, elapsed: float,
           budget: float) -> tuple[Recipe, dict] | None:
    """After global step `done` (within an epoch or at its end) of a run sized by a budget of `budget` seconds,
    `elapsed` seconds in, its latest steps having taken `slower` times their timing: the run re-sized to the speed it
    runs at now, with the record of the decision, or None to go on as planned.

    The rest of the run is predicted from the start's timing scaled by `slower`; the run is re-sized when that end
    leaves [budget - 2 m, budget - m / 2], m the margin: SAFETY of the seconds left, and at least MIN_MARGIN of the
    budget. It then takes the most steps whose end is predicted by budget - m, at least one more step and as many
    as the rest of the recipe needs (progressive sizes, warmup, mix-off epochs); the schedule's rest is stretched or
    squeezed over them (`derive.schedule_position`), train.resized_at / resized_from record where and from what
    length."""
    n = run_steps(r, steps_per_epoch)
    if done >= n:
        return None
    now = Timing(step={k: v * slower for k, v in timing.step.items()}, evaluation=timing.evaluation * slower,
                 checkpoint=timing.checkpoint * slower)

    def end(m: int) -> float:  # the checkpoint written here (a re-size's, or the epoch's), then the rest of the run
        return elapsed + now.checkpoint + predicted_seconds(r, steps_per_epoch, now, m, done)

    margin = max(SAFETY * (budget - elapsed), MIN_MARGIN * budget)
    before = end(n)
    if budget - 2 * margin <= before <= budget - margin / 2:
        return None
    # the fewest steps that break no rule of the recipe (fewer only break more): one past the most that break one
    least = done + 2 + _last(lambda k: length_problem(_resized(r, done + 1 + k, done), steps_per_epoch) != "",
                             0, "a re-size")
    m = max(least, _last(lambda m: end(m) <= budget - margin, least, f"{budget:.0f} s"))
    if m == n:
        return None
    sized = _resized(r, m, done)
    record = {"epoch": -(-done // steps_per_epoch), "at_step": done, "elapsed": elapsed, "slower": slower,
              "predicted_end": before, "steps_before": n, "steps": m, "epochs": run_epochs(sized, steps_per_epoch),
              "predicted_seconds": end(m)}
    return sized, record


def _resized(r: Recipe, m: int, done: int) -> Recipe:
    """`r` re-sized after its step `done` to `m` steps."""
    tr = r.train
    return dataclasses.replace(r, train=dataclasses.replace(
        tr, steps=m, resized_at=(*tr.resized_at, done), resized_from=(*tr.resized_from, tr.steps)))


def resize_line(record: dict) -> str:
    """The run log's line about a re-size."""
    pace = f"{record['slower']:.2f}x slower" if record["slower"] >= 1 else f"{1 / record['slower']:.2f}x faster"
    return (f"train.budget: the steps up to step {record['at_step']} (epoch {record['epoch']}) ran {pace} than the "
            f"start's timing, and the run's end was predicted at "
            f"{record['predicted_end']:.0f} s; re-sized from {record['steps_before']} to {record['steps']} steps "
            f"({record['epochs']} epochs), its end predicted at {record['predicted_seconds']:.0f} s; the schedule's "
            f"rest follows (recipe.yaml: train.resized_at, train.resized_from)")


def follow_length(r: Recipe, n: int, steps_per_epoch: int) -> Recipe:
    """`r` sized to `n` steps by its budget (train.steps n, no budget), a step schedule's milestones moved with it:
    each keeps its share of the length the recipe has without the budget (train.steps, else train.epochs)."""
    planned = run_steps(r, steps_per_epoch)  # train.steps, else train.epochs: the budget is not a length there
    sized = dataclasses.replace(r, train=dataclasses.replace(r.train, steps=n, budget=""))
    if r.schedule.kind != "step" or n == planned:
        return sized
    moved = tuple(float(f"{m * n / planned:.6g}") for m in r.schedule.milestones)
    return dataclasses.replace(sized, schedule=dataclasses.replace(r.schedule, milestones=moved))


def length_line(r: Recipe, steps_per_epoch: int, pace: Pace | None, resumed: bool = False) -> str:
    """The run log's line about a length in steps (and the budget that chose it, and a resume's share of it)."""
    epochs = run_epochs(r, steps_per_epoch)
    line = (f"length: train.steps {r.train.steps} ({epochs} epoch{'' if epochs == 1 else 's'} of {steps_per_epoch} "
            f"steps; train.epochs is not used)")
    if pace is None:
        return line
    record = pace.record
    moved = (f"; the step schedule's milestones follow it: epochs {_epochs(record['milestones'])} of the recipe's "
             f"length are epochs {_epochs(r.schedule.milestones)} of this run" if "milestones" in record else "")
    gone_on = (f"; resumed with {held(pace)['budget_spent']:.0f} s of the budget spent (the attempts before, up to "
               f"the checkpoint, and this process's start-up), it goes on against the rest" if resumed else "")
    return (f"{line}, chosen by train.budget {record['budget']} on this machine: {record['spent_before_run']:.0f} s "
            f"spent before the run, its end predicted at {record['predicted_seconds']:.0f} s of "
            f"{record['budget_seconds']:.0f}{moved}; recipe.yaml records "
            f"train.steps{' and the milestones' if moved else ''}: a rerun of it or --resume is this run{gone_on}")


def _epochs(milestones: Any) -> str:
    return ", ".join(f"{m:.3g}" for m in milestones)
