"""`bagoftricks ablate`: a ladder or grid of recipe overrides x seeds -> run folders + results.jsonl.

A spec (YAML) names a base recipe and the steps to measure:

    name: fmnist-table4                 # optional, default: the spec's file name
    description: efficient training     # optional, shown in the report
    base: ../fmnist/baseline.yaml       # recipe file relative to the spec, or an inline recipe dict,
                                        # or both: {recipe: ../fmnist/baseline.yaml, train: {epochs: 4}}
    set: {train.device: cpu}            # overrides applied to every cell (dict or list of "k=v")
    seeds: 3                            # a count (seeds 0..K-1) or a list of seeds; default 3
    ladder:                             # cumulative: step i = base + set + steps 0..i
      - {name: baseline}
      - {name: + warmup, set: {tricks.warmup_epochs: 1}, paper: 75.93}
    # grid:                             # instead of ladder: each alternative = base + set + its own set
    teacher:                            # optional: trained once, before the cells that need it;
      base: ../fmnist/teacher.yaml      # an override value "{teacher}" is replaced by its run folder
      set: {model.arch: resnet56}

Each cell (step, seed) is an ordinary run folder ``OUT/runs/<NN>-<slug>/seed<k>`` trained by a
``python -m bagoftricks train`` subprocess; the teacher lives in ``OUT/runs/teacher``. ``OUT/cells.json``
holds the plan (every cell's override list and command), ``OUT/results.jsonl`` one line per finished
attempt (only this parent process appends to it, so lines never interleave; the last line of a cell
wins), ``OUT/base.yaml`` the resolved base recipe the commands start from.

Re-running the same command is safe and cheap:
  * a finished cell (final.json present) is skipped without touching its folder (a missing results
    line is rebuilt from the folder);
  * a partial cell (checkpoints, no final.json) continues with ``train --resume``;
  * a failed cell is left as it is and still counts as failed (exit code 1) unless ``--retry-failed``
    is given: then its folder is moved aside to ``seed<k>.failed-<n>`` and the cell starts afresh
    (failures such as a diverging lr are deterministic, so resuming them would fail again);
  * a cell folder whose recipe differs from what the spec now asks for is an error (exit 2) before
    anything runs: results of two different recipes never mix under one name.

Where a cell's command runs is the launcher's only job (an Executor): ``--launcher local`` (default)
starts ``--jobs N`` subprocesses on this machine; ``--launcher ray [--address ADDR]`` runs each command
as a Ray task (one GPU each on a cluster with GPUs, else a share of CPUs) on any node that sees OUT at
the same path. Everything else above (the plan, which cells run with which command, skip/resume/retry,
results.jsonl) is done the same way by this driver process for both. Ray is optional
(``pip install 'bagoftricks[ray]'``) and imported only when ``--launcher ray`` is asked for.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import yaml

from bagoftricks import recipe as brecipe
from bagoftricks.recipe import RecipeError

SPEC_KEYS = ("name", "description", "base", "set", "seeds", "ladder", "grid", "teacher")
STEP_KEYS = ("name", "set", "paper", "note")
TEACHER_KEYS = ("base", "set")
TEACHER_TOKEN = "{teacher}"
DEFAULT_SEEDS = 3
# Fields that say how/where a cell runs, not what it trains: ignored when an existing cell folder is
# compared with the spec (train.threads depends on --jobs, data.root on the machine).
EXEC_FIELDS = ("train.threads", "train.resume", "data.root", "data.workers", "data.timeout",
               "train.log_every_steps", "tricks.distill_teacher")
RESULTS, CELLS, BASE, TEACHER_BASE, LOCK = "results.jsonl", "cells.json", "base.yaml", "teacher-base.yaml", ".ablate.lock"


class SpecError(RecipeError):
    """The ablation spec (or its run folder) is invalid; exit code 2, the message names the key."""


# ------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class Step:
    index: int
    name: str
    slug: str
    own: tuple[str, ...]          # this step's own overrides ("k=v")
    overrides: tuple[str, ...]    # what the cell applies after base + spec set (cumulative for ladders)
    paper: dict = field(default_factory=dict)  # the paper's numbers for this row, e.g. {"top1": 75.93}
    note: str = ""

    @property
    def folder(self) -> str:
        return f"{self.index:02d}-{self.slug}"


@dataclass(frozen=True)
class Cell:
    key: str                      # "02-warmup/seed1" or "teacher"
    step: Step | None             # None for the teacher
    seed: int
    rel_dir: str                  # run folder relative to OUT
    overrides: tuple[str, ...]    # spec set + step overrides + train.seed (placeholders resolved)
    base_file: str                # BASE or TEACHER_BASE
    needs_teacher: bool = False

    @property
    def is_teacher(self) -> bool:
        return self.step is None


@dataclass
class Spec:
    path: Path | None
    name: str
    description: str
    kind: str                     # ladder | grid
    base_dict: dict               # resolved base recipe (to_dict)
    set: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: list[Step]
    teacher: dict | None          # {"base_dict": ..., "set": (...)} or None
    raw_text: str = ""


_GREEK = {"α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "eps", "η": "eta", "λ": "lambda",
          "μ": "mu", "σ": "sigma", "τ": "tau", "×": "x"}


def slugify(name: str) -> str:
    """'+ linear scaling (4x batch)' -> 'linear-scaling-4x-batch', '+ zero γ' -> 'zero-gamma'; stable
    and file-name safe."""
    s = "".join(_GREEK.get(ch, ch) for ch in str(name).lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s[:60].rstrip("-") or "step"


def format_value(v: Any) -> str:
    """A YAML value as the right-hand side of an override that recipe.apply_overrides reads back."""
    if isinstance(v, str):
        try:
            back = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            back = None
        return v if back == v else json.dumps(v)
    if isinstance(v, (list, tuple, dict, bool)) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _overrides(value: Any, where: str) -> tuple[str, ...]:
    """`set:` as a mapping {k: v} or a list of "k=v" strings -> ("k=v", ...)."""
    if value is None:
        return ()
    if isinstance(value, dict):
        flat: dict = {}
        for k, v in value.items():  # {train: {epochs: 3}} is the same as {train.epochs: 3}
            if isinstance(v, dict) and k in brecipe.SECTIONS:
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        out = []
        for k, v in flat.items():
            if not isinstance(k, str) or k.count(".") != 1:
                hint = brecipe._suggest(str(k), brecipe.all_keys())
                raise SpecError(f"{where}: override key {k!r} must be section.field{hint}")
            out.append(f"{k}={format_value(v)}")
        return tuple(out)
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise SpecError(f"{where}: expected 'section.field=value' strings, got {item!r}")
            out.append(item)
        return tuple(out)
    raise SpecError(f"{where}: expected a mapping of overrides or a list of 'k=v', got {value!r}")


def _key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Concatenate override lists; a later value of a key replaces the earlier one in place."""
    out: dict[str, str] = {}
    for g in groups:
        for item in g:
            out[_key(item)] = item
    return tuple(out.values())


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    for k in d:
        if k not in allowed:
            import difflib
            close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(allowed)}"
            raise SpecError(f"{where}: unknown key '{k}'{hint}")


def _load_base(value: Any, spec_dir: Path, where: str) -> dict:
    """`base:` -> a resolved recipe dict: a file path, an inline recipe, or {recipe: path, <sections>}."""
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"recipe": value}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a recipe file path or a recipe mapping, got {value!r}")
    value = dict(value)
    path = value.pop("recipe", None)
    r = brecipe.Recipe()
    if path is not None:
        p = Path(path)
        if not p.is_absolute():
            p = spec_dir / p
        if not p.is_file():
            raise SpecError(f"{where}: recipe file not found: {p}")
        try:
            r = brecipe.from_dict(yaml.safe_load(p.read_text()), r, source=str(p))
        except yaml.YAMLError as e:
            raise SpecError(f"{p}: not valid YAML: {e}".splitlines()[0]) from None
    try:
        r = brecipe.from_dict(value, r, source=where)
    except RecipeError as e:
        raise SpecError(str(e)) from None
    return brecipe.to_dict(r)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if value is None:
        return tuple(range(DEFAULT_SEEDS))
    if isinstance(value, bool):
        raise SpecError(f"{where}: expected a count or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"{where}: the number of seeds must be >= 1, got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise SpecError(f"{where}: seeds repeat: {value}")
        return tuple(value)
    raise SpecError(f"{where}: expected a count or a non-empty list of seeds >= 0, got {value!r}")


def _paper(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"top1": float(value)}
    if isinstance(value, dict) and set(value) <= {"top1", "top5"} and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        return {k: float(v) for k, v in value.items()}
    raise SpecError(f"{where}: expected a top-1 number or {{top1: .., top5: ..}}, got {value!r}")


def parse_spec(data: Any, path: Path | None = None, raw_text: str = "") -> Spec:
    """Check a spec mapping completely and expand its steps (no recipe validation yet: see expand)."""
    where = str(path) if path else "spec"
    spec_dir = path.parent if path else Path.cwd()
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping with base/set/seeds and ladder or grid")
    _check_keys(data, SPEC_KEYS, where)
    has_ladder, has_grid = "ladder" in data, "grid" in data
    if has_ladder == has_grid:
        raise SpecError(f"{where}: give exactly one of 'ladder' (cumulative steps) or 'grid' (independent alternatives)")
    kind = "ladder" if has_ladder else "grid"
    items = data[kind]
    if not isinstance(items, list) or not items:
        raise SpecError(f"{where}: {kind}: expected a non-empty list of steps {{name, set}}")
    base_dict = _load_base(data.get("base"), spec_dir, f"{where}: base")
    spec_set = _overrides(data.get("set"), f"{where}: set")
    steps: list[Step] = []
    cumulative: tuple[str, ...] = ()
    names: set[str] = set()
    for i, item in enumerate(items):
        w = f"{where}: {kind}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise SpecError(f"{w}: expected a mapping {{name, set}}, got {item!r}")
        _check_keys(item, STEP_KEYS, w)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"{w}: every step needs a 'name'")
        name = name.strip()
        if name in names:
            raise SpecError(f"{w}: step name '{name}' is used twice")
        names.add(name)
        own = _overrides(item.get("set"), f"{w} '{name}': set")
        cumulative = merge(cumulative, own) if kind == "ladder" else own
        steps.append(Step(i, name, slugify(name), own, cumulative, _paper(item.get("paper"), f"{w} '{name}': paper"),
                          str(item.get("note") or "")))
    teacher = None
    if data.get("teacher") is not None:
        t = data["teacher"]
        if not isinstance(t, dict):
            raise SpecError(f"{where}: teacher: expected a mapping {{base, set}}")
        _check_keys(t, TEACHER_KEYS, f"{where}: teacher")
        tb = _load_base(t["base"], spec_dir, f"{where}: teacher.base") if "base" in t else base_dict
        teacher = {"base_dict": tb, "set": _overrides(t.get("set"), f"{where}: teacher.set")}
    name = data.get("name") or (path.stem if path else "ablation")
    if not isinstance(name, str):
        raise SpecError(f"{where}: name: expected a string, got {name!r}")
    return Spec(path, name, str(data.get("description") or ""), kind, base_dict, spec_set,
                _seeds(data.get("seeds"), f"{where}: seeds"), steps, teacher, raw_text)


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"ablation spec not found: {p}")
    text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}".splitlines()[0]) from None
    return parse_spec(data, p, text)


def expand(spec: Spec, out: str | Path, seeds: tuple[int, ...] | None = None,
           extra: tuple[str, ...] = ()) -> list[Cell]:
    """Every cell of the sweep, teacher first; each cell's recipe is resolved and validated here.

    `extra` are command-line overrides applied to every cell after the spec's own.
    """
    out_abs = Path(out).resolve()
    seeds = tuple(seeds) if seeds is not None else spec.seeds
    where = str(spec.path) if spec.path else "spec"
    teacher_dir = str(out_abs / "runs" / "teacher")
    uses = [s for s in spec.steps if any(TEACHER_TOKEN in o for o in merge(spec.set, s.overrides, extra))]
    if uses and spec.teacher is None:
        raise SpecError(f"{where}: step '{uses[0].name}' uses {TEACHER_TOKEN} but the spec has no 'teacher' section")
    cells: list[Cell] = []
    if spec.teacher is not None:
        ov = merge(spec.set, spec.teacher["set"], extra)
        if any(TEACHER_TOKEN in o for o in ov):
            raise SpecError(f"{where}: teacher: the teacher cannot use {TEACHER_TOKEN}")
        cell = Cell("teacher", None, 0, "runs/teacher", ov, TEACHER_BASE)
        _resolve(spec.teacher["base_dict"], cell, f"{where}: teacher")
        cells.append(cell)
    for step in spec.steps:
        for seed in seeds:
            ov = merge(spec.set, step.overrides, extra)
            needs = any(TEACHER_TOKEN in o for o in ov)
            ov = tuple(o.replace(TEACHER_TOKEN, teacher_dir) for o in ov)
            ov = merge(ov, (f"train.seed={seed}",))
            cell = Cell(f"{step.folder}/seed{seed}", step, seed, f"runs/{step.folder}/seed{seed}", ov, BASE, needs)
            r = _resolve(spec.base_dict, cell, f"{where}: {spec.kind} step {step.index} '{step.name}'")
            teacher = r.tricks.distill_teacher
            if teacher and not needs and not Path(teacher).exists():
                raise SpecError(f"{where}: {spec.kind} step {step.index} '{step.name}': tricks.distill_teacher: "
                                f"{teacher} does not exist (train it first, or use a 'teacher' section and {TEACHER_TOKEN})")
            cells.append(cell)
    return cells


def _resolve(base_dict: dict, cell: Cell, where: str) -> brecipe.Recipe:
    try:
        r = brecipe.from_dict(base_dict)
        r = brecipe.apply_overrides(r, cell.overrides)
        return brecipe.validate(r)
    except RecipeError as e:
        raise SpecError(f"{where}: {e}") from None


def cell_recipe(spec: Spec, cell: Cell) -> brecipe.Recipe:
    base = spec.teacher["base_dict"] if cell.is_teacher else spec.base_dict
    return _resolve(base, cell, cell.key)


# -------------------------------------------------------------------------------------- cell states
def read_results(out: str | Path) -> dict[str, dict]:
    """The last results line of each cell (keyed by cell key); torn lines are ignored."""
    path = Path(out) / RESULTS
    latest: dict[str, dict] = {}
    if not path.is_file():
        return latest
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "cell" in rec:
            latest[rec["cell"]] = rec
    return latest


def cell_state(out: Path, cell: Cell, results: dict[str, dict]) -> str:
    """done | failed | partial | new."""
    d = out / cell.rel_dir
    if (d / "final.json").is_file():
        return "done"
    rec = results.get(cell.key)
    if rec is not None and rec.get("status") == "failed":
        return "failed"
    if any((d / "checkpoints").glob("step-*.pt")):
        return "partial"
    return "new"


def _diff_recipes(a: dict, b: dict) -> list[str]:
    diffs = []
    for sname, sec in a.items():
        for k, v in sec.items():
            key = f"{sname}.{k}"
            if key in EXEC_FIELDS:
                continue
            w = b.get(sname, {}).get(k)
            if v != w:
                diffs.append(f"{key}: {w!r} in the folder, {v!r} in the spec")
    return diffs


def check_existing(spec: Spec, out: Path, cells: list[Cell], states: dict[str, str], retry_failed: bool) -> None:
    """A cell folder that holds a run of a different recipe is an error (nothing runs)."""
    for cell in cells:
        if states[cell.key] == "failed" and retry_failed:
            continue  # will be moved aside
        f = out / cell.rel_dir / "recipe.yaml"
        if not f.is_file():
            continue
        try:
            have = brecipe.to_dict(brecipe.from_dict(yaml.safe_load(f.read_text()), source=str(f)))
        except (RecipeError, yaml.YAMLError, OSError):
            continue  # an unreadable recipe: the engine will say so when it touches the folder
        want = brecipe.to_dict(cell_recipe(spec, cell))
        diffs = _diff_recipes(want, have)
        if diffs:
            raise SpecError(f"{out / cell.rel_dir}: holds a run of a different recipe than the spec asks for "
                            f"({diffs[0]}{'; ...' if len(diffs) > 1 else ''}); use another --out or remove that folder")


def _move_aside(d: Path, tag: str) -> Path:
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
    env = read_json_dict(run_dir / "env.json")
    num_classes = env.get("num_classes")
    in_channels = None
    from bagoftricks.engine.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
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
        from bagoftricks.engine.loop import build_model
        from bagoftricks.models import count_params_macs
        model = build_model(r, int(num_classes), int(in_channels))
        _COST_CACHE[key] = tuple(int(x) for x in count_params_macs(model, (in_channels, r.data.image_size, r.data.image_size)))
    return _COST_CACHE[key]


def read_json_dict(path: Path) -> dict:
    """The JSON object in ``path``; {} when the file is missing, unreadable, malformed or not an object."""
    try:
        d = json.loads(Path(path).read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _read_metrics(path: Path) -> list[dict]:
    from bagoftricks.engine.runfolder import read_metrics
    return read_metrics(path)


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def result_record(spec: Spec, out: Path, cell: Cell, status: str, reason: str | None = None,
                  exit_code: int | None = None, elapsed: float | None = None) -> dict:
    d = out / cell.rel_dir
    final = read_json_dict(d / "final.json")
    metrics = _read_metrics(d / "metrics.jsonl")
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
        "best_val_top1": max(tops) if tops else None,
        "images_per_sec": _mean([m.get("images_per_sec") for m in metrics]),
        "seconds_per_epoch": _mean([m.get("seconds") for m in metrics]),
        "wall_seconds": final.get("wall_seconds"),
        "elapsed_seconds": elapsed,
        "params": params, "macs": macs,
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def append_result(out: Path, rec: dict) -> None:
    """One line per call, written with a single write() under an exclusive lock, then fsynced."""
    import fcntl
    with open(out / RESULTS, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------- running
def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA means CPU jobs
        return []


def train_command(out: Path, cell: Cell, threads: int, resume: bool, python: str = sys.executable) -> list[str]:
    d = out / cell.rel_dir
    if resume:
        return [python, "-m", "bagoftricks", "train", "--resume", str(d), "--no-progress"]
    cmd = [python, "-m", "bagoftricks", "train", "--recipe", str(out / cell.base_file)]
    for o in merge(cell.overrides, (f"train.threads={threads}",)):
        cmd += ["--set", o]
    return cmd + ["--out", str(d), "--no-progress"]


def _display(cmd: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(c) for c in ["bagoftricks", *cmd[3:]])


def _last_line(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _fmt_time(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class _Stop(Exception):
    pass


def _popen_cell(cmd: list[str], d: Path, env: dict, preexec_fn: Callable[[], Any] | None = None
                ) -> tuple[subprocess.Popen, int, list]:
    """Start a cell's command with its output appended to d/stdout.log and d/stderr.log; returns the
    process, the offset in stderr.log where this attempt's output starts, and the open files."""
    d.mkdir(parents=True, exist_ok=True)
    out_f = open(d / "stdout.log", "ab")
    err_f = open(d / "stderr.log", "ab")
    offset = err_f.tell()
    # its own session: a Ctrl-C at the terminal reaches only the launcher, which forwards exactly one
    # signal, so the child writes its checkpoint instead of dying on a second one
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True, preexec_fn=preexec_fn)
    return proc, offset, [out_f, err_f]


def _stop_procs(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGINT once (the cell finishes its step and writes a checkpoint), then kill after `grace` s."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ launchers
# The sweep (_run) decides which cells run, in which order, with which command (train_command: fresh or
# --resume), moves failed/stale folders aside and is the only writer of results.jsonl. A launcher
# ("executor") only starts a cell's command somewhere, says when it ended, and stops it on Ctrl-C.
LAUNCHERS = ("local", "ray")
RAY_HINT = "pip install 'bagoftricks[ray]'"


class LauncherError(SpecError):
    """--launcher/--address cannot be used as given (Ray missing, unreachable or without resources); exit 2."""


@dataclass
class Finished:
    """A cell's command ended: its exit code (None when the launcher lost it before it exited), the last
    line of this attempt's stderr (or the launcher's error), and how long it ran."""
    cell: Cell
    code: int | None
    reason: str
    elapsed: float


class Executor:
    """How cell commands are executed. `threads` (train.threads of every cell) and `slots` (cells at
    once) are known after open()."""
    name = "executor"
    threads = 1
    slots = 1

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        """Get ready to run (connect to a cluster, ...); `connect=False` for a dry run."""

    def describe(self) -> str:
        return f"{self.slots} at a time, {self.threads} thread(s) each"

    def free(self) -> int:
        """How many more cells can start now."""
        raise NotImplementedError

    def running(self) -> list[Cell]:
        raise NotImplementedError

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[Finished]:
        """Wait up to `timeout` s; the cells whose commands ended meanwhile."""
        raise NotImplementedError

    def stop(self, grace: float) -> None:
        """Interrupt every running cell (it checkpoints and exits), killing what is left after `grace` s."""
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class _Job:
    cell: Cell
    proc: subprocess.Popen
    slot: int
    started: float
    err_path: Path
    err_offset: int
    files: list


class LocalExecutor(Executor):
    """`--jobs N` subprocesses on this machine, each with max(1, cores // N) threads and, when there are
    GPUs, the GPU of its job slot (round robin)."""
    name = "local"

    def __init__(self, jobs: int):
        self.slots = jobs
        self.threads = max(1, available_cores() // jobs)
        self.gpus = visible_gpus()
        self._free = list(range(jobs))
        self._jobs: list[_Job] = []

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        if self.gpus and self.slots > len(self.gpus):
            echo(f"note: {self.slots} jobs share {len(self.gpus)} GPU(s) round robin")

    def free(self) -> int:
        return len(self._free)

    def running(self) -> list[Cell]:
        return [j.cell for j in self._jobs]

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        slot = self._free.pop(0)
        proc, offset, files = _popen_cell(cmd, run_dir, job_env(slot, self.threads, self.gpus))
        self._jobs.append(_Job(cell, proc, slot, time.monotonic(), run_dir / "stderr.log", offset, files))

    def poll(self, timeout: float) -> list[Finished]:
        time.sleep(timeout)
        done = []
        for job in list(self._jobs):
            code = job.proc.poll()
            if code is None:
                continue
            self._jobs.remove(job)
            self._free.append(job.slot)
            self._free.sort()
            for f in job.files:
                f.close()
            done.append(Finished(job.cell, code, _last_line(job.err_path, job.err_offset),
                                 time.monotonic() - job.started))
        return done

    def stop(self, grace: float) -> None:
        _stop_procs([j.proc for j in self._jobs], grace)
        for job in self._jobs:
            for f in job.files:
                f.close()
        self._jobs.clear()


def _child_setup(death_signal: int) -> Callable[[], None] | None:
    """The preexec_fn of a cell started by a Ray worker. It unblocks every signal (Ray workers block
    SIGINT, and a blocked mask is inherited: the cell would never see the SIGINT that asks it to
    checkpoint and stop) and, on Linux, has the kernel send `death_signal` to the cell when the worker
    that started it dies (PR_SET_PDEATHSIG: a forced cancel, the OOM killer or a lost raylet then
    SIGTERMs the cell, which writes a checkpoint and exits, instead of leaving it training unseen)."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if prctl is not None:
            prctl(1, int(death_signal), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    return setup


def run_cell_command(cmd: list[str], run_dir: str, threads: int) -> dict:
    """The Ray task of a cell: run its train command on the worker's machine, with that machine's Python
    and bagoftricks, `threads` threads and the GPU Ray assigned to the task (Ray sets
    CUDA_VISIBLE_DEVICES), output appended to the cell folder's stdout.log/stderr.log as the local
    launcher does. A cancel from the driver (its Ctrl-C) arrives as KeyboardInterrupt and is forwarded
    once as SIGINT, so the cell writes a checkpoint before it stops. Writes nothing else: the driver
    reads final.json and appends to results.jsonl."""
    d = Path(run_dir)
    proc, offset, files = _popen_cell([sys.executable, *cmd[1:]], d, job_env(0, threads, []),
                                      _child_setup(signal.SIGTERM))
    started = time.monotonic()
    try:
        # poll, not wait(): Ray delivers a cancel between Python bytecodes, never inside a blocking wait()
        while (code := proc.poll()) is None:
            time.sleep(0.5)
    except BaseException:
        _stop_procs([proc], 120)
        raise
    finally:
        for f in files:
            f.close()
    return {"code": code, "reason": _last_line(d / "stderr.log", offset), "elapsed": time.monotonic() - started}


def import_ray():
    """The `ray` module, or a LauncherError (exit 2) that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise LauncherError(f"--launcher ray needs Ray, which is not installed ({e}); "
                            f"install it with: {RAY_HINT}") from None
    return ray


def probe_address(address: str, timeout: float = 10.0) -> None:
    """A LauncherError unless something accepts a TCP connection at a host:port (or ray://host:port)
    address: ray.init waits for an unreachable cluster for minutes, deaf to Ctrl-C. Other forms
    ("auto", "local") are left to Ray."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if m is None:
        return
    import socket
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise LauncherError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); "
                            f"start one with `ray start --head` or give its address") from None


def ray_plan(nodes: list[dict], jobs: int, use_gpus: bool = True) -> tuple[int, int, bool]:
    """(threads per cell, cells at once, one GPU per cell?) on a Ray cluster whose alive nodes have the
    resources `nodes` ({"CPU": 16, "GPU": 8, ...} each).

    With GPUs (and cells that may use them), each cell takes one GPU and an equal share of its node's
    CPUs (the smallest share over the GPU nodes, so that every GPU can be used); otherwise each cell
    takes max(1, CPUs // jobs) CPUs of the smallest node, as `--jobs N` does on one machine.
    """
    gpu_nodes = [r for r in nodes if int(r.get("GPU", 0)) >= 1]
    if use_gpus and gpu_nodes:
        threads = max(1, min(int(r.get("CPU", 0)) // int(r["GPU"]) for r in gpu_nodes))
        slots = sum(min(int(r["GPU"]), int(r.get("CPU", 0)) // threads) for r in gpu_nodes)
        return threads, max(1, slots), True
    cpus = [int(r.get("CPU", 0)) for r in nodes if int(r.get("CPU", 0)) >= 1]
    if not cpus:
        raise LauncherError("the Ray cluster has no CPUs to run cells on")
    threads = max(1, min(cpus) // jobs)
    return threads, max(1, sum(c // threads for c in cpus)), False


class RayExecutor(Executor):
    """Each cell a Ray task (run_cell_command) with num_cpus=threads and, on a cluster with GPUs, one
    GPU. OUT must be one folder that every node sees at the same path."""
    name = "ray"

    def __init__(self, jobs: int, address: str | None = None, use_gpus: bool = True):
        self.ray = import_ray()
        self.jobs, self.address, self.use_gpus = jobs, address, use_gpus
        self.gpu = False
        self.nodes: list[dict] = []
        self._tasks: list[tuple[Any, Cell, float]] = []  # (ObjectRef, cell, submitted)
        self._remote = None
        self._started_ray = False

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        if not connect:
            return
        ray = self.ray
        if not ray.is_initialized():
            if self.address is not None:
                probe_address(self.address)
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False}
            if self.address is None:
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"--address {self.address}" if self.address else "a local Ray instance"
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise LauncherError(f"--launcher ray: could not connect to {where}: {msg}") from None
            self._started_ray = True
        self.nodes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
        self.threads, self.slots, self.gpu = ray_plan(self.nodes, self.jobs, self.use_gpus)
        self._remote = ray.remote(run_cell_command)
        cpus = sum(int(r.get("CPU", 0)) for r in self.nodes)
        gpus = sum(int(r.get("GPU", 0)) for r in self.nodes)
        echo(f"ray: {len(self.nodes)} node(s), {cpus} CPU(s), {gpus} GPU(s)")

    def describe(self) -> str:
        if self._remote is None:
            return "as Ray tasks"
        return (f"as Ray tasks, up to {self.slots} at a time, {self.threads} thread(s)"
                f"{' and 1 GPU' if self.gpu else ''} each")

    def free(self) -> int:
        return max(0, self.slots - len(self._tasks))

    def running(self) -> list[Cell]:
        return [cell for _, cell, _ in self._tasks]

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        opts = {"num_cpus": self.threads, "num_gpus": 1 if self.gpu else 0, "max_retries": 0,
                "name": f"bagoftricks-ablate:{cell.key}"}
        ref = self._remote.options(**opts).remote(cmd, str(run_dir), self.threads)
        self._tasks.append((ref, cell, time.monotonic()))

    def poll(self, timeout: float) -> list[Finished]:
        if not self._tasks:
            time.sleep(timeout)
            return []
        refs = [t[0] for t in self._tasks]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        done = []
        for ref in ready:
            i = next(i for i, t in enumerate(self._tasks) if t[0] == ref)
            _, cell, submitted = self._tasks.pop(i)
            try:
                res = self.ray.get(ref)
                done.append(Finished(cell, int(res["code"]), str(res.get("reason") or ""), float(res["elapsed"])))
            except Exception as e:  # noqa: BLE001 - the task or its worker/node died: the cell failed
                err = getattr(e, "cause", None) or e
                text = str(err).strip().splitlines()
                done.append(Finished(cell, None, f"ray: {type(err).__name__}" + (f": {text[0]}" if text else ""),
                                     time.monotonic() - submitted))
        return done

    def stop(self, grace: float) -> None:
        refs = [t[0] for t in self._tasks]
        for ref in refs:  # KeyboardInterrupt in the task, which forwards SIGINT to its cell
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001
                pass
        if refs:
            _, left = self.ray.wait(refs, num_returns=len(refs), timeout=grace)
            for ref in left:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
        self._tasks.clear()

    def close(self) -> None:
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False


def make_executor(launcher: str, jobs: int, address: str | None = None, use_gpus: bool = True) -> Executor:
    if launcher == "local":
        return LocalExecutor(jobs)
    if launcher == "ray":
        return RayExecutor(jobs, address, use_gpus)
    raise LauncherError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")


def select_steps(spec: Spec, only: list[str] | tuple[str, ...]) -> set[int]:
    """--only values (step index, name, slug or folder) -> step indices; unknown ones are errors."""
    chosen: set[int] = set()
    for item in only:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            hit = [s.index for s in spec.steps if part in (str(s.index), s.name, s.slug, s.folder)]
            if not hit:
                raise SpecError(f"--only: no step '{part}'; steps: "
                                + ", ".join(f"{s.index} ({s.slug})" for s in spec.steps))
            chosen.update(hit)
    return chosen


def run_sweep(spec: Spec, out: str | Path, *, jobs: int = 1, seeds: tuple[int, ...] | None = None,
              extra: tuple[str, ...] = (), dry_run: bool = False, retry_failed: bool = False,
              only: list[str] | tuple[str, ...] = (), echo: Callable[[str], None] = print,
              argv: list[str] | None = None, launcher: str = "local", address: str | None = None) -> int:
    """Run every cell not yet finished; returns 0 when every cell is ok, 1 when any failed.

    `only` restricts the run to some steps (the teacher still runs first when one of them needs it);
    the exit status then only counts those steps' cells. `launcher` says where the cells' commands
    run: "local" (subprocesses, `jobs` at a time) or "ray" (Ray tasks on the cluster at `address`;
    None starts or attaches a local instance, "auto" attaches to a running cluster).
    """
    out = Path(out)
    if jobs < 1:
        raise SpecError(f"--jobs: must be >= 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise LauncherError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "ray":
        import_ray()  # exit 2 with the install hint before anything else
        out = out.resolve()  # the commands run in other processes, maybe on other machines
    elif address is not None:
        raise LauncherError("--address is for --launcher ray")
    all_cells = expand(spec, out, seeds, extra)  # validates every cell's recipe before anything is written
    cells = all_cells
    if only:
        chosen = select_steps(spec, only)
        cells = [c for c in all_cells if not c.is_teacher and c.step.index in chosen]
        if any(c.needs_teacher for c in cells):
            cells = [c for c in all_cells if c.is_teacher] + cells
    results = read_results(out)
    states = {c.key: cell_state(out, c, results) for c in cells}
    check_existing(spec, out, cells, states, retry_failed)
    todo = [c for c in cells if states[c.key] in ("new", "partial") or (states[c.key] == "failed" and retry_failed)]
    # a Ray cell asks for a GPU only when the cluster has some and its recipe may use one
    use_gpus = launcher == "ray" and any(cell_recipe(spec, c).train.device != "cpu" for c in todo)
    executor = make_executor(launcher, jobs, address, use_gpus)
    try:
        executor.open(echo, connect=not dry_run and bool(todo))
        counts = {s: sum(1 for c in cells if states[c.key] == s) for s in ("done", "partial", "failed", "new")}
        echo(f"{spec.name}: {len(cells)} cells ({spec.kind} of {len(spec.steps)} steps x {len(seeds or spec.seeds)} seeds"
             f"{' + teacher' if spec.teacher else ''}) in {out}: {counts['done']} finished, {counts['partial']} partial, "
             f"{counts['failed']} failed, {counts['new']} new; {len(todo)} to run, {executor.describe()}")
        if dry_run:
            for c in cells:
                st = states[c.key]
                action = {"done": "skip", "partial": "resume", "new": "run",
                          "failed": "retry" if retry_failed else "skip (failed)"}[st]
                echo(f"  {c.key:<36} {st:<8} {action:<14} {' '.join(c.overrides)}")
            return 0

        out.mkdir(parents=True, exist_ok=True)
        import fcntl
        lock = open(out / LOCK, "w")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise SpecError(f"{out}: another `bagoftricks ablate` is running on this folder") from None
        try:
            # (a Ray sweep with nothing left to run never connects, so it knows no threads: keep its plan)
            if launcher == "local" or todo or not (out / CELLS).is_file():
                _write_plan(spec, out, all_cells, executor.threads, jobs, argv, launcher=launcher)
            return _run(spec, out, cells, states, todo, executor, echo)
        finally:
            lock.close()
    finally:
        executor.close()


def _write_if_changed(path: Path, text: str) -> None:
    from bagoftricks.engine.checkpoint import atomic_write_text
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def _write_plan(spec: Spec, out: Path, cells: list[Cell], threads: int, jobs: int, argv: list[str] | None,
                *, launcher: str = "local") -> None:
    header = "# resolved base recipe of the ablation '{}' (written by bagoftricks ablate)\n"
    _write_if_changed(out / BASE, header.format(spec.name) + brecipe.dump(brecipe.from_dict(spec.base_dict)))
    if spec.teacher is not None:
        _write_if_changed(out / TEACHER_BASE, header.format(spec.name + " teacher")
                          + brecipe.dump(brecipe.from_dict(spec.teacher["base_dict"])))
    if spec.raw_text:
        _write_if_changed(out / "spec.yaml", spec.raw_text)
    plan = {
        "name": spec.name, "description": spec.description, "kind": spec.kind,
        "spec": str(spec.path) if spec.path else None, "argv": argv, "cwd": os.getcwd(), "launcher": launcher,
        "jobs": jobs, "seeds": sorted({c.seed for c in cells if not c.is_teacher}), "set": list(spec.set),
        "steps": [{"index": s.index, "name": s.name, "folder": s.folder, "set": list(s.own),
                   "overrides": list(s.overrides), "paper": s.paper, "note": s.note} for s in spec.steps],
        "teacher": None if spec.teacher is None else {"run_dir": "runs/teacher", "set": list(spec.teacher["set"])},
        "cells": [{"cell": c.key, "step": "teacher" if c.is_teacher else c.step.name,
                   "index": None if c.is_teacher else c.step.index, "seed": c.seed, "run_dir": c.rel_dir,
                   "overrides": list(c.overrides), "command": _display(train_command(out, c, threads, False))}
                  for c in cells],
    }
    _write_if_changed(out / CELLS, json.dumps(plan, indent=2) + "\n")


def job_env(slot: int, threads: int, gpus: list[str], base: dict | None = None) -> dict:
    """The environment of the cell in job slot `slot`: its share of the cores, and one GPU (round
    robin over the visible ones when there are more jobs than GPUs; none given: the environment's)."""
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    pkg_root = str(Path(__file__).resolve().parent.parent)  # the child runs this very bagoftricks
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(spec: Spec, out: Path, cells: list[Cell], states: dict[str, str], todo: list[Cell],
         executor: Executor, echo: Callable[[str], None]) -> int:
    results = read_results(out)
    # finished cells without an ok line (e.g. the parent died between final.json and the append)
    for c in cells:
        if states[c.key] == "done" and results.get(c.key, {}).get("status") != "ok":
            rec = result_record(spec, out, c, "ok")
            append_result(out, rec)
            results[c.key] = rec
    queue = list(todo)
    durations: list[float] = []
    total = len(queue)
    started = 0
    finished = 0

    def teacher_status() -> str:
        if spec.teacher is None:
            return "ok"
        if (out / "runs/teacher/final.json").is_file():
            return "ok"
        if any(c.is_teacher for c in executor.running()) or any(c.is_teacher for c in queue):
            return "pending"
        return "failed"

    def eta() -> str:
        left = total - finished
        if not durations or left == 0:
            return ""
        return f", ETA {_fmt_time(sum(durations) / len(durations) * left / min(executor.slots, max(left, 1)))}"

    def record(cell: Cell, status: str, reason: str | None, code: int | None, elapsed: float | None):
        nonlocal finished
        rec = result_record(spec, out, cell, status, reason, code, elapsed)
        append_result(out, rec)
        results[cell.key] = rec
        finished += 1
        if elapsed is not None:
            durations.append(elapsed)
        top = f"top-1 {rec['val_top1']:.2f}" if isinstance(rec.get("val_top1"), (int, float)) else ""
        msg = f"[{finished}/{total}] {status:<6} {cell.key:<32} {top:<12} {_fmt_time(elapsed or 0):>7}"
        if status != "ok":
            msg += f"  {reason}"
        echo(msg + f" | {finished} done, {total - finished} left{eta()}")

    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Stop(signum)

    in_main = __import__("threading").current_thread() is __import__("threading").main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        while queue or executor.running():
            # launch what can run
            i = 0
            while executor.free() and i < len(queue):
                cell = queue[i]
                if cell.needs_teacher:
                    ts = teacher_status()
                    if ts == "pending":
                        i += 1
                        continue
                    if ts == "failed":
                        queue.pop(i)
                        record(cell, "failed", "the teacher (runs/teacher) did not finish", None, None)
                        continue
                queue.pop(i)
                d = out / cell.rel_dir
                resume = False
                if states[cell.key] == "failed":
                    if d.exists():
                        moved = _move_aside(d, "failed")
                        echo(f"  retrying {cell.key}: the failed attempt is kept in {moved.relative_to(out)}")
                elif any((d / "checkpoints").glob("step-*.pt")):
                    resume = True
                elif (d / "recipe.yaml").exists():  # started but never checkpointed: nothing to keep
                    moved = _move_aside(d, "stale")
                    echo(f"  {cell.key} had no checkpoint; its files are kept in {moved.relative_to(out)}")
                executor.start(cell, train_command(out, cell, executor.threads, resume), d)
                started += 1
                echo(f"[{started}/{total}] start  {cell.key}{' (resume)' if resume else ''}")
            # wait for something to finish
            for f in executor.poll(0.2):
                if f.code == 0 and (out / f.cell.rel_dir / "final.json").is_file():
                    record(f.cell, "ok", None, 0, f.elapsed)
                else:
                    reason = f.reason or f"exit code {f.code}"
                    if f.code is not None and f.code < 0:
                        reason = f"killed by signal {-f.code}" + (f" ({reason})" if reason else "")
                    record(f.cell, "failed", reason, f.code, f.elapsed)
    except (KeyboardInterrupt, _Stop):
        echo(f"interrupted: stopping {len(executor.running())} running cell(s) at their next step (checkpoints "
             f"are kept); run the same command again to resume")
        executor.stop(120)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
    failed = [c for c in cells if results.get(c.key, {}).get("status") == "failed"
              and not (out / c.rel_dir / "final.json").is_file()]
    ok = sum(1 for c in cells if (out / c.rel_dir / "final.json").is_file())
    echo(f"{spec.name}: {ok} of {len(cells)} cells ok, {len(failed)} failed; results in {out / RESULTS}")
    for c in failed:
        echo(f"  failed {c.key}: {results[c.key].get('reason')}")
    if failed:
        echo("  (failed cells are kept as they are; re-run with --retry-failed to start them afresh)")
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------- CLI
def cmd_ablate(args) -> int:
    spec = load_spec(args.spec)
    seeds = tuple(range(args.seeds)) if args.seeds is not None else None
    if args.seeds is not None and args.seeds < 1:
        raise SpecError(f"--seeds: must be >= 1, got {args.seeds}")
    argv = ["bagoftricks", "ablate", args.spec, "--out", args.out, "--jobs", str(args.jobs)]
    argv += ["--seeds", str(args.seeds)] if args.seeds is not None else []
    for o in args.overrides:
        argv += ["--set", o]
    if args.launcher != "local":
        argv += ["--launcher", args.launcher]
    argv += ["--address", args.address] if args.address is not None else []
    return run_sweep(spec, args.out, jobs=args.jobs, seeds=seeds, extra=tuple(args.overrides), dry_run=args.dry_run,
                     retry_failed=args.retry_failed, only=args.only, argv=argv, echo=lambda s: print(s, flush=True),
                     launcher=args.launcher, address=args.address)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "ablate", help="run a ladder or grid of recipe overrides x seeds (Tables 4-6) into run folders",
        description="Run every cell (step x seed) of an ablation spec as its own run folder under OUT/runs/, "
                    "appending each cell's final numbers to OUT/results.jsonl. Re-running skips finished cells, "
                    "resumes partial ones and keeps failed ones (see --retry-failed). Exit 1 if any cell failed.")
    p.add_argument("spec", help="ablation spec (YAML: base, set, seeds, ladder | grid, teacher)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (created; re-use it to continue)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells at once; each gets max(1, cores // N) threads, and one GPU when there are GPUs "
                        "(--launcher ray: cells per CPU-only machine)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="where cells run: local subprocesses (default) or Ray tasks (pip install 'bagoftricks[ray]'); "
                        "DIR must then be a folder every node sees at the same path")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="--launcher ray: the cluster for ray.init(address=ADDR), e.g. auto or ray://host:10001 "
                        "(default: start or attach a local Ray instance)")
    p.add_argument("--seeds", type=int, default=None, metavar="K", help="use seeds 0..K-1 instead of the spec's")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="extra override for every cell, after the spec's (repeatable)")
    p.add_argument("--only", action="append", default=[], metavar="STEP",
                   help="run only this step (index, name or slug; repeatable or comma-separated)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and what would happen; run nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="start failed cells afresh (their old folder is kept as seed<k>.failed-<n>)")
    p.set_defaults(func=cmd_ablate)


def main(argv: list[str] | None = None) -> int:  # python -m bagoftricks.ablate
    from bagoftricks.cli import main as cli_main
    return cli_main(["ablate", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
