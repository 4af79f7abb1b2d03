"""The sweep driver (run_sweep): every cell of a spec not yet finished, run by a launcher.

Each cell (step, seed) is an ordinary run folder trained by a ``python -m bagoftricks train``
subprocess; the teacher, when the spec has one, runs before the cells that need it. This process writes
the plan (cells.json, base.yaml), decides which cells run with which command, and is the only one that
appends to results.jsonl, so lines never interleave; the launcher only says where a command runs.

Re-running the same command is safe and cheap:
  * a finished cell (final.json present) is skipped without touching its folder (a missing results
    line is rebuilt from the folder);
  * a partial cell (checkpoints, no final.json) continues with ``train --resume``;
  * a failed cell is left as it is and still counts as failed (exit code 1) unless ``--retry-failed``
    is given: then its folder is moved aside to ``seed<k>.failed-<n>`` and the cell starts afresh
    (failures such as a diverging lr are deterministic, so resuming them would fail again);
  * a cell folder whose recipe differs from what the spec now asks for is an error (exit 2) before
    anything runs: results of two different recipes never mix under one name.

A step whose cells would train the recipe of another row (a ladder row equal to the row above, a grid
row equal to an earlier one: its overrides are values the recipe already has) is an error (exit 2)
before anything runs or is written, unless ``allow_unchanged`` (``--allow-unchanged``) runs it anyway
with a warning: such a step costs its cells and measures seed noise only.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bagoftricks import recipe as brecipe
from bagoftricks.ablate.folder import (BASE, CELLS, RESULTS, SPEC_COPY, TEACHER_BASE, append_result, base_file,
                                       cell_state, check_existing, has_checkpoint, is_finished, locked, move_aside,
                                       read_results, result_record)
from bagoftricks.ablate.launchers import LAUNCHERS, Executor, Finished, LocalExecutor
from bagoftricks.ablate.ray_launcher import RayExecutor, import_ray
from bagoftricks.ablate.spec import (TEACHER_DIR, Cell, Spec, Step, cell_recipe, cell_task, expand, format_value, merge,
                                     select_steps)
from bagoftricks.errors import SpecError, UsageError
from bagoftricks.files import atomic_write_text


def run_sweep(spec: Spec, out: str | Path, *, jobs: int = 1, seeds: tuple[int, ...] | None = None,
              extra: tuple[str, ...] = (), dry_run: bool = False, retry_failed: bool = False,
              only: list[str] | tuple[str, ...] = (), echo: Callable[[str], None] = print,
              argv: list[str] | None = None, launcher: str = "local", address: str | None = None,
              allow_unchanged: bool = False) -> int:
    """Run every cell not yet finished; returns 0 when every cell is ok, 1 when any failed.

    `only` restricts the run to some steps (the teacher still runs first when one of them needs it);
    the exit status then only counts those steps' cells. `launcher` says where the cells' commands
    run: "local" (subprocesses, `jobs` at a time) or "ray" (Ray tasks on the cluster at `address`;
    None starts or attaches a local instance, "auto" attaches to a running cluster). A step to run that
    changes nothing (unchanged_steps) is a SpecError, or with `allow_unchanged` a warning.
    """
    out = _check_options(Path(out), jobs, launcher, address)
    all_cells = expand(spec, out, seeds, extra)  # validates every cell's recipe before anything is written
    cells = _chosen(spec, all_cells, only)
    _check_unchanged(spec, all_cells, cells, extra, allow_unchanged, echo)
    results = read_results(out)
    states = {c.key: cell_state(out, c, results) for c in cells}
    check_existing(spec, out, cells, states, retry_failed)
    todo = [c for c in cells if states[c.key] in ("new", "partial") or (states[c.key] == "failed" and retry_failed)]
    # a Ray cell asks for a GPU only when the cluster has some and its recipe may use one
    use_gpus = launcher == "ray" and any(cell_recipe(spec, c).train.device != "cpu" for c in todo)
    executor = make_executor(launcher, jobs, address, use_gpus)
    try:
        executor.open(echo, connect=not dry_run and bool(todo))
        echo(_overview(spec, out, cells, states, todo, len(seeds or spec.seeds), executor))
        if dry_run:
            _print_plan(cells, states, retry_failed, echo)
            return 0
        with locked(out):
            # (a Ray sweep with nothing left to run never connects, so it knows no threads: keep its plan)
            if launcher == "local" or todo or not (out / CELLS).is_file():
                write_plan(spec, out, all_cells, executor.threads, jobs, argv, launcher=launcher, extra=extra)
            return _Driver(spec, out, cells, states, todo, executor, echo).run()
    finally:
        executor.close()


def _check_options(out: Path, jobs: int, launcher: str, address: str | None) -> Path:
    """Errors in --jobs/--launcher/--address before anything else; the sweep folder as the commands see it."""
    if jobs < 1:
        raise SpecError(f"--jobs: must be >= 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise UsageError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "ray":
        import_ray()  # exit 2 with the install hint before anything else
        return out.resolve()  # the commands run in other processes, maybe on other machines
    if address is not None:
        raise UsageError("--address is for --launcher ray")
    return out


def _chosen(spec: Spec, all_cells: list[Cell], only: list[str] | tuple[str, ...]) -> list[Cell]:
    """The cells of the --only steps, after the teacher when one of them needs it; every cell without --only."""
    if not only:
        return all_cells
    chosen = select_steps(spec, only)
    cells = [c for c in all_cells if not c.is_teacher and c.step.index in chosen]
    if any(c.needs_teacher for c in cells):
        cells = [c for c in all_cells if c.is_teacher] + cells
    return cells


# fields in which two rows may differ and still train the same cells: ablate replaces both in every cell,
# the seed with the cell's seed (every row runs the same seeds) and the threads with its --jobs share
SAME_CELLS_IGNORE = ("train.seed", "train.threads")


def unchanged_steps(spec: Spec, cells: list[Cell]) -> list[tuple[Step, Step]]:
    """The steps whose cells would train the recipe of another row, as (step, that row): in a ladder the row
    above, in a grid an earlier row. Rows are compared at their first seed (`cells`: expand's)."""
    recipes: dict[int, brecipe.Recipe] = {}
    for c in cells:
        if not c.is_teacher and c.step.index not in recipes:
            recipes[c.step.index] = cell_recipe(spec, c)
    found = []
    for i, step in enumerate(spec.steps):
        others = spec.steps[max(0, i - 1):i] if spec.kind == "ladder" else spec.steps[:i]
        same = next((o for o in others if step.index in recipes and o.index in recipes
                     and not brecipe.diff(recipes[o.index], recipes[step.index], ignore=SAME_CELLS_IGNORE)), None)
        if same is not None:
            found.append((step, same))
    return found


def _unchanged_text(spec: Spec, cells: list[Cell], step: Step, same: Step, extra: tuple[str, ...]) -> str:
    """What an unchanged step sets that the other row already had, as its cells resolve it (after --set)."""
    mine, theirs = (brecipe.flat(cell_recipe(spec, next(c for c in cells if c.step is s))) for s in (step, same))
    given = brecipe.override_keys(extra)
    keys = [k for k in (o.split("=", 1)[0].strip() for o in step.own) if k in mine]
    sets = [f"{k}={format_value(mine[k])}" + (" (from --set)" if k in given else "")
            for k in keys if k not in SAME_CELLS_IGNORE and mine[k] == theirs[k]]
    what = (f"it sets {', '.join(sets)}, which that step already has" if sets else
            f"it sets only {', '.join(keys)}, which ablate replaces in every cell" if keys else "it sets nothing")
    return f"step {step.index} '{step.name}' changes nothing: it trains the recipe of step {same.index} " \
           f"'{same.name}' ({what})"


def _check_unchanged(spec: Spec, all_cells: list[Cell], cells: list[Cell], extra: tuple[str, ...], allow: bool,
                     echo: Callable[[str], None]) -> None:
    """Refuse the steps to run whose cells would repeat another row's; with `allow`, warn once for each."""
    chosen = {c.step.index for c in cells if not c.is_teacher}
    texts = [_unchanged_text(spec, all_cells, step, same, extra)
             for step, same in unchanged_steps(spec, all_cells) if step.index in chosen]
    if texts and not allow:
        where = str(spec.path) if spec.path else "spec"
        it = "it" if len(texts) == 1 else "them"
        raise SpecError(f"{where}: {'; '.join(texts)}; the cells would repeat another row's and measure seed "
                        f"noise only: change or remove {it}, or pass --allow-unchanged to run {it} anyway")
    for t in texts:
        echo(f"warning: {t}; running it anyway (--allow-unchanged)")


def make_executor(launcher: str, jobs: int, address: str | None = None, use_gpus: bool = True) -> Executor:
    if launcher == "local":
        return LocalExecutor(jobs)
    if launcher == "ray":
        return RayExecutor(jobs, address, use_gpus)
    raise UsageError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")


def _overview(spec: Spec, out: Path, cells: list[Cell], states: dict[str, str], todo: list[Cell], n_seeds: int,
              executor: Executor) -> str:
    """The line that says what the sweep holds and what this run will do."""
    counts = {s: sum(1 for c in cells if states[c.key] == s) for s in ("done", "partial", "failed", "new")}
    return (f"{spec.name}: {len(cells)} cells ({spec.kind} of {len(spec.steps)} steps x {n_seeds} seeds"
            f"{' + teacher' if spec.teacher else ''}) in {out}: {counts['done']} finished, "
            f"{counts['partial']} partial, {counts['failed']} failed, {counts['new']} new; {len(todo)} to run, "
            f"{executor.describe()}")


def _print_plan(cells: list[Cell], states: dict[str, str], retry_failed: bool, echo: Callable[[str], None]) -> None:
    """--dry-run: each cell's state, what a run would do with it, and its overrides."""
    for c in cells:
        st = states[c.key]
        action = {"done": "skip", "partial": "resume", "new": "run",
                  "failed": "retry" if retry_failed else "skip (failed)"}[st]
        echo(f"  {c.key:<36} {st:<8} {action:<14} {' '.join(c.overrides)}")


# ----------------------------------------------------------------------------------- the plan
def train_command(out: Path, cell: Cell, threads: int, resume: bool, python: str = sys.executable,
                  task: str = "") -> list[str]:
    """The `bagoftricks train` command of a cell: afresh from OUT's base recipe and the cell's overrides,
    or `--resume` of its folder; `bagoftricks transfer --task TASK` for a transfer cell (spec.cell_task)."""
    d = out / cell.rel_dir
    command = ["transfer"] if task else ["train"]
    if resume:
        return [python, "-m", "bagoftricks", *command, "--resume", str(d), "--no-progress"]
    cmd = [python, "-m", "bagoftricks", *command, *(["--task", task] if task else []),
           "--recipe", str(out / base_file(cell))]
    for o in merge(cell.overrides, (f"train.threads={threads}",)):
        cmd += ["--set", o]
    return cmd + ["--out", str(d), "--no-progress"]


def _display(cmd: list[str]) -> str:
    """A train command as the user would type it (`bagoftricks train ...`)."""
    return " ".join(shlex.quote(c) for c in ["bagoftricks", *cmd[3:]])


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def write_plan(spec: Spec, out: Path, cells: list[Cell], threads: int, jobs: int, argv: list[str] | None,
               *, launcher: str = "local", extra: tuple[str, ...] = ()) -> None:
    """base.yaml, teacher-base.yaml, spec.yaml and cells.json of the sweep (files that did not change are
    left untouched). `extra`: the command line's --set overrides, applied to every cell after the spec's."""
    header = "# resolved base recipe of the ablation '{}' (written by bagoftricks ablate)\n"
    _write_if_changed(out / BASE, header.format(spec.name) + brecipe.dump(brecipe.from_dict(spec.base_dict)))
    if spec.teacher is not None:
        _write_if_changed(out / TEACHER_BASE, header.format(spec.name + " teacher")
                          + brecipe.dump(brecipe.from_dict(spec.teacher["base_dict"])))
    if spec.raw_text:
        _write_if_changed(out / SPEC_COPY, spec.raw_text)
    plan = {
        "name": spec.name, "description": spec.description, "kind": spec.kind,
        "spec": str(spec.path) if spec.path else None, "argv": argv, "cwd": os.getcwd(), "launcher": launcher,
        "jobs": jobs, "seeds": sorted({c.seed for c in cells if not c.is_teacher}), "set": list(spec.set),
        "extra": list(extra),
        "steps": [{"index": s.index, "name": s.name, "folder": s.folder, "set": list(s.own),
                   "overrides": list(s.overrides), "paper": s.paper, "note": s.note} for s in spec.steps],
        "teacher": None if spec.teacher is None else {"run_dir": TEACHER_DIR, "set": list(spec.teacher["set"])},
        "cells": [{"cell": c.key, "step": "teacher" if c.is_teacher else c.step.name,
                   "index": None if c.is_teacher else c.step.index, "seed": c.seed, "run_dir": c.rel_dir,
                   "overrides": list(c.overrides),
                   "command": _display(train_command(out, c, threads, False, task=cell_task(spec, c)))}
                  for c in cells],
    }
    _write_if_changed(out / CELLS, json.dumps(plan, indent=2) + "\n")


# --------------------------------------------------------------------------------- the run itself
def fmt_time(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class _Stop(Exception):
    """SIGTERM, raised in the driver so that it stops its cells the way Ctrl-C does."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM raises _Stop while the body runs (only the main thread may set a signal handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Driver:
    """One run over the cells to do: starts them as the launcher has room (a student once its teacher
    finished), appends a results line when each ends, and prints progress with an ETA."""

    def __init__(self, spec: Spec, out: Path, cells: list[Cell], states: dict[str, str], todo: list[Cell],
                 executor: Executor, echo: Callable[[str], None]):
        self.spec, self.out, self.cells, self.states = spec, out, cells, states
        self.executor, self.echo = executor, echo
        self.queue = list(todo)
        self.total = len(todo)
        self.started = self.finished = 0
        self.durations: list[float] = []
        self.results = read_results(out)

    def run(self) -> int:
        """0 when every cell is ok, 1 when any failed, 130 when interrupted (the cells checkpoint and stop)."""
        self._record_finished_folders()
        with _sigterm_stops():
            try:
                while self.queue or self.executor.running():
                    self._launch()
                    for f in self.executor.poll(0.2):
                        self._collect(f)
            except (KeyboardInterrupt, _Stop):
                self.echo(f"interrupted: stopping {len(self.executor.running())} running cell(s) at their next "
                          f"step (checkpoints are kept); run the same command again to resume")
                self.executor.stop(120)
                return 130
        return self._summary()

    def _append(self, rec: dict) -> None:
        append_result(self.out, rec)
        self.results[rec["cell"]] = rec

    def _record_finished_folders(self) -> None:
        """Finished cells without an ok line (the driver died between their final.json and the append)."""
        for c in self.cells:
            if self.states[c.key] == "done" and self.results.get(c.key, {}).get("status") != "ok":
                self._append(result_record(self.spec, self.out, c, "ok"))

    def _teacher_status(self) -> str:
        if self.spec.teacher is None or (self.out / TEACHER_DIR / "final.json").is_file():
            return "ok"
        if any(c.is_teacher for c in self.executor.running()) or any(c.is_teacher for c in self.queue):
            return "pending"
        return "failed"

    def _launch(self) -> None:
        """Start queued cells while the launcher has room; a student waits for its teacher, and fails
        without running when the teacher did not finish."""
        i = 0
        while self.executor.free() and i < len(self.queue):
            cell = self.queue[i]
            teacher = self._teacher_status() if cell.needs_teacher else "ok"
            if teacher == "pending":
                i += 1
                continue
            self.queue.pop(i)
            if teacher == "failed":
                self._record(cell, "failed", "the teacher (runs/teacher) did not finish", None, None)
            else:
                self._start(cell)

    def _start(self, cell: Cell) -> None:
        d = self.out / cell.rel_dir
        resume = self._prepare_folder(cell, d)
        task = cell_task(self.spec, cell)
        self.executor.start(cell, train_command(self.out, cell, self.executor.threads, resume, task=task), d)
        self.started += 1
        self.echo(f"[{self.started}/{self.total}] start  {cell.key}{' (resume)' if resume else ''}")

    def _prepare_folder(self, cell: Cell, d: Path) -> bool:
        """Move a failed or never-checkpointed attempt aside; True when the cell resumes from a checkpoint."""
        if self.states[cell.key] == "failed":
            if d.exists():
                moved = move_aside(d, "failed")
                self.echo(f"  retrying {cell.key}: the failed attempt is kept in {moved.relative_to(self.out)}")
            return False
        if has_checkpoint(d):
            return True
        if (d / "recipe.yaml").exists():  # started but never checkpointed: nothing to keep
            moved = move_aside(d, "stale")
            self.echo(f"  {cell.key} had no checkpoint; its files are kept in {moved.relative_to(self.out)}")
        return False

    def _collect(self, f: Finished) -> None:
        if f.code == 0 and is_finished(self.out, f.cell):
            self._record(f.cell, "ok", None, 0, f.elapsed)
            return
        reason = f.reason or f"exit code {f.code}"
        if f.code is not None and f.code < 0:
            reason = f"killed by signal {-f.code} ({reason})"
        self._record(f.cell, "failed", reason, f.code, f.elapsed)

    def _eta(self) -> str:
        left = self.total - self.finished
        if not self.durations or left == 0:
            return ""
        per_cell = sum(self.durations) / len(self.durations)
        return f", ETA {fmt_time(per_cell * left / min(self.executor.slots, max(left, 1)))}"

    def _record(self, cell: Cell, status: str, reason: str | None, code: int | None, elapsed: float | None) -> None:
        rec = result_record(self.spec, self.out, cell, status, reason, code, elapsed)
        self._append(rec)
        self.finished += 1
        if elapsed is not None:
            self.durations.append(elapsed)
        top = f"top-1 {rec['val_top1']:.2f}" if isinstance(rec.get("val_top1"), (int, float)) else ""
        msg = f"[{self.finished}/{self.total}] {status:<6} {cell.key:<32} {top:<12} {fmt_time(elapsed or 0):>7}"
        if status != "ok":
            msg += f"  {reason}"
        self.echo(msg + f" | {self.finished} done, {self.total - self.finished} left{self._eta()}")

    def _summary(self) -> int:
        failed = [c for c in self.cells if self.results.get(c.key, {}).get("status") == "failed"
                  and not is_finished(self.out, c)]
        ok = sum(1 for c in self.cells if is_finished(self.out, c))
        self.echo(f"{self.spec.name}: {ok} of {len(self.cells)} cells ok, {len(failed)} failed; "
                  f"results in {self.out / RESULTS}")
        for c in failed:
            self.echo(f"  failed {c.key}: {self.results[c.key].get('reason')}")
        if failed:
            self.echo("  (failed cells are kept as they are; re-run with --retry-failed to start them afresh)")
        return 1 if failed else 0
