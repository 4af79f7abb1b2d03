"""The sweep folder: what `bagoftricks ablate` writes into OUT and `bagoftricks report` reads back.

    cells.json              the plan: every cell's override list and `bagoftricks train` command
    base.yaml               the resolved base recipe the cells' commands start from
    teacher-base.yaml       the same for the distillation teacher, when the spec has one
    spec.yaml               a copy of the spec
    results.jsonl           one line per finished attempt of a cell; the last line of a cell wins
    runs/<NN>-<slug>/seed<k>  one ordinary run folder per cell (final.json once it finished)
    runs/teacher            the teacher's run folder
    .ablate.lock            held by the sweep that runs on OUT, the only writer of results.jsonl

A cell is done when its folder holds final.json, failed when its last results line says so, partial
when it has a checkpoint, new otherwise. A failed or never-checkpointed attempt that is started again
is first moved aside to ``seed<k>.failed-<n>`` / ``seed<k>.stale-<n>``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
from collections.abc import Iterator
from pathlib import Path

import yaml

from bagoftricks import recipe as brecipe
from bagoftricks.ablate.spec import Cell, Spec, cell_recipe
from bagoftricks.errors import CheckpointError, RecipeError, SpecError
from bagoftricks.files import append_jsonl, read_json_object, read_jsonl

CELLS = "cells.json"
BASE = "base.yaml"
TEACHER_BASE = "teacher-base.yaml"
SPEC_COPY = "spec.yaml"
RESULTS = "results.jsonl"
LOCK = ".ablate.lock"
# Fields that say how/where a cell runs, not what it trains: ignored when an existing cell folder is
# compared with the spec (train.threads depends on --jobs, data.root on the machine, the teacher's
# path on where OUT is).
EXEC_FIELDS = ("train.threads", "train.resume", "data.root", "data.workers", "data.timeout",
               "train.log_every_steps", "tricks.distill_teacher")

# A transfer cell's scores (bagoftricks transfer's final.json), copied into its results line.
TRANSFER_SCORES = ("map_50", "map", "miou", "pixel_acc")


def base_file(cell: Cell) -> str:
    """The recipe file in OUT that a cell's command starts from."""
    return TEACHER_BASE if cell.is_teacher else BASE


def is_finished(out: Path, cell: Cell) -> bool:
    return (out / cell.rel_dir / "final.json").is_file()


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step-*.pt"))


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT's lock file while the body runs; a SpecError when another sweep holds it."""
    import fcntl  # POSIX only: imported here so that the package itself imports anywhere
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / LOCK, "w")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise SpecError(f"{out}: another `bagoftricks ablate` is running on this folder") from None
    try:
        yield
    finally:
        lock.close()


# ------------------------------------------------------------------------------------- cell states
def read_results(out: str | Path) -> dict[str, dict]:
    """The last results line of each cell (keyed by cell key).

    A torn line is skipped, not the end of the file: a sweep that appends after a failed write
    leaves good lines behind the torn one, and they must still count.
    """
    latest: dict[str, dict] = {}
    for rec in read_jsonl(Path(out) / RESULTS, skip_bad=True):
        if isinstance(rec, dict) and "cell" in rec:
            latest[rec["cell"]] = rec
    return latest


def cell_state(out: Path, cell: Cell, results: dict[str, dict]) -> str:
    """done | failed | partial | new."""
    if is_finished(out, cell):
        return "done"
    rec = results.get(cell.key)
    if rec is not None and rec.get("status") == "failed":
        return "failed"
    if has_checkpoint(out / cell.rel_dir):
        return "partial"
    return "new"


def check_existing(spec: Spec, out: Path, cells: list[Cell], states: dict[str, str], retry_failed: bool) -> None:
    """A cell folder that holds a run of a different recipe is an error (nothing runs)."""
    for cell in cells:
        if states[cell.key] == "failed" and retry_failed:
            continue  # will be moved aside
        f = out / cell.rel_dir / "recipe.yaml"
        if not f.is_file():
            continue
        try:
            have = brecipe.from_dict(yaml.safe_load(f.read_text()), source=str(f))
        except (RecipeError, yaml.YAMLError, OSError):
            continue  # an unreadable recipe: the engine will say so when it touches the folder
        from bagoftricks.engine.runfolder import recorded_asked
        diffs = brecipe.run_diff(cell_recipe(spec, cell), have, recorded_asked(f.parent), ignore=EXEC_FIELDS)
        if diffs:
            key, want, got = diffs[0]
            raise SpecError(f"{out / cell.rel_dir}: holds a run of a different recipe than the spec asks for "
                            f"({key}: {got!r} in the folder, {want!r} in the spec{'; ...' if len(diffs) > 1 else ''}); "
                            f"use another --out or remove that folder")


def move_aside(d: Path, tag: str) -> Path:
    """Rename a cell folder to <name>.<tag>-<n> with the first free n; returns the new path."""
    n = 1
    while (dest := d.with_name(f"{d.name}.{tag}-{n}")).exists():
        n += 1
    d.rename(dest)
    return dest


# ------------------------------------------------------------------------------------- cell results
_COST_CACHE: dict[str, tuple[int, int]] = {}


def model_cost(run_dir: Path) -> tuple[int | None, int | None]:
    """(params, MACs per image) of a run's model at its data.image_size, from its recipe and checkpoint."""
    try:
        r = brecipe.from_dict(yaml.safe_load((run_dir / "recipe.yaml").read_text()))
    except (OSError, RecipeError, yaml.YAMLError):
        return None, None
    env = read_json_object(run_dir / "env.json")
    if env.get("task"):  # a transfer run: its size is the detector's or segmenter's, not the zoo model's
        return None, None
    num_classes = env.get("num_classes")
    in_channels = None
    from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
    ckpts = list_checkpoints(run_dir)
    if ckpts:
        try:
            state = load_checkpoint(ckpts[-1])
            num_classes = state.get("num_classes", num_classes)
            in_channels = state.get("in_channels")
        except CheckpointError:
            pass
    if num_classes is None or in_channels is None:
        return None, None
    key = json.dumps([brecipe.to_dict(r)["model"], num_classes, in_channels, r.data.image_size], sort_keys=True)
    if key not in _COST_CACHE:
        from bagoftricks.engine.derive import recipe_model
        from bagoftricks.models import count_params_macs
        model = recipe_model(r, int(num_classes), int(in_channels))
        size = (in_channels, r.data.image_size, r.data.image_size)
        _COST_CACHE[key] = tuple(int(x) for x in count_params_macs(model, size))
    return _COST_CACHE[key]


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def result_record(spec: Spec, out: Path, cell: Cell, status: str, reason: str | None = None,
                  exit_code: int | None = None, elapsed: float | None = None) -> dict:
    """A cell's results line: who it is, how it ended, and its numbers read from its run folder."""
    d = out / cell.rel_dir
    final = read_json_object(d / "final.json")
    metrics = read_jsonl(d / "metrics.jsonl")
    tops = [m["val_top1"] for m in metrics if isinstance(m.get("val_top1"), (int, float))]
    params, macs = model_cost(d) if d.is_dir() else (None, None)
    return {
        "spec": spec.name, "kind": "teacher" if cell.is_teacher else spec.kind,
        "step": "teacher" if cell.is_teacher else cell.step.name,
        "index": None if cell.is_teacher else cell.step.index,
        "seed": cell.seed, "cell": cell.key, "run_dir": cell.rel_dir, "overrides": list(cell.overrides),
        "status": status, "reason": reason, "exit_code": exit_code,
        "epochs": final.get("epoch", metrics[-1]["epoch"] if metrics else None),
        "val_top1": final.get("val_top1"), "val_top5": final.get("val_top5"),
        **({"val_tta_top1": final["val_tta_top1"]} if "val_tta_top1" in final else {}),
        **{k: final.get(k) for k in TRANSFER_SCORES if k in final},
        "best_val_top1": max(tops) if tops else None,
        "images_per_sec": _mean([m.get("images_per_sec") for m in metrics]),
        "seconds_per_epoch": _mean([m.get("seconds") for m in metrics]),
        "wall_seconds": final.get("wall_seconds"),
        "elapsed_seconds": elapsed,
        "params": params, "macs": macs,
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def append_result(out: Path, rec: dict) -> None:
    """One line, in a single write flushed to disk; the sweep holding OUT's lock is the only writer."""
    append_jsonl(Path(out) / RESULTS, rec)
