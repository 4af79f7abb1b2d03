"""An ablation spec: its YAML checked (parse_spec, load_spec) and expanded into cells (expand).

    name: fmnist-table4                 # optional, default: the spec's file name
    description: efficient training     # optional, shown in the report
    base: ../fmnist/baseline.yaml       # recipe file relative to the spec (else a shipped recipe's name,
                                        # fmnist/baseline), or an inline recipe dict,
                                        # or both: {recipe: ../fmnist/baseline.yaml, train: {epochs: 4}}
    set: {train.device: cpu}            # overrides applied to every cell (dict or list of "k=v")
    seeds: 3                            # a count (seeds 0..K-1) or a list of seeds; default 3
    ladder:                             # cumulative: step i = base + set + steps 0..i
      - {name: baseline}
      - {name: + warmup, set: {tricks.warmup_epochs: 1}, paper: {top1: 75.93, verified: false}}
    # grid:                             # instead of ladder: each alternative = base + set + its own set
    teacher:                            # optional: trained once, before the cells that need it;
      base: ../fmnist/teacher.yaml      # an override value "{teacher}" is replaced by its run folder
      set: {model.arch: resnet56}

A cell is one (step, seed) pair, with its run folder ``runs/<NN>-<slug>/seed<k>`` relative to the sweep
folder (the teacher's is ``runs/teacher``). expand resolves and validates every cell's recipe, so a bad
key or value is a SpecError (exit 2) that names the step before anything runs.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bagoftricks import recipe as brecipe
from bagoftricks.errors import RecipeError, SpecError

SPEC_KEYS = ("name", "description", "base", "set", "seeds", "ladder", "grid", "teacher")
STEP_KEYS = ("name", "set", "paper", "note")
TEACHER_KEYS = ("base", "set")
TEACHER_TOKEN = "{teacher}"
SEED_TOKEN = "{seed}"  # in an override value: the cell's seed (a transfer cell's backbone run of the same seed)
TEACHER_DIR = "runs/teacher"
DEFAULT_SEEDS = 3


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
    rel_dir: str                  # run folder relative to the sweep folder
    overrides: tuple[str, ...]    # spec set + step overrides + train.seed (placeholders resolved)
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
                hint = brecipe.suggest(str(k), brecipe.all_keys())
                raise SpecError(f"{where}: override key {k!r} must be section.field{hint}")
            out.append(f"{k}={format_value(v)}")
        return tuple(out)
    if isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise SpecError(f"{where}: expected 'section.field=value' strings, got {item!r}")
        return tuple(value)
    raise SpecError(f"{where}: expected a mapping of overrides or a list of 'k=v', got {value!r}")


def merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Concatenate override lists; a later value of a key replaces the earlier one in place."""
    out: dict[str, str] = {}
    for g in groups:
        for item in g:
            out[item.split("=", 1)[0].strip()] = item
    return tuple(out.values())


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    for k in d:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(allowed)}"
            raise SpecError(f"{where}: unknown key '{k}'{hint}")


def _read_yaml(p: Path) -> tuple[Any, str]:
    """(the parsed YAML, its text) of a file that exists; a SpecError that names it when it does not parse."""
    return brecipe.read_yaml(p, SpecError), p.read_text()


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
        try:  # a file relative to the spec first, then a shipped recipe's name
            p = brecipe.resolve_recipe_path(str(path), relative_to=spec_dir)
        except RecipeError as e:
            raise SpecError(f"{where}: {e}") from None
        r = brecipe.from_dict(brecipe.read_yaml(p, SpecError), r, source=str(p))
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
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise SpecError(f"{where}: seeds repeat: {value}")
        return tuple(value)
    raise SpecError(f"{where}: expected a count or a non-empty list of seeds >= 0, got {value!r}")


PAPER_METRICS = ("top1", "top5")


def _paper(value: Any, where: str) -> dict:
    """`paper:` -> {"top1": .., "top5": .., "unverified": [metrics]}: a number is the top-1; a mapping may
    say `verified: false` (none of its values checked against the paper's text) or `verified: [top5]` (only
    those), and the report marks the unverified values."""
    if value is None:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"top1": float(value)}
    expected = f"expected a top-1 number or {{top1: .., top5: .., verified: ..}}, got {value!r}"
    if not isinstance(value, dict) or not set(value) <= {*PAPER_METRICS, "verified"}:
        raise SpecError(f"{where}: {expected}")
    nums = {k: v for k, v in value.items() if k != "verified"}
    if not nums or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in nums.values()):
        raise SpecError(f"{where}: {expected}")
    out: dict = {k: float(v) for k, v in nums.items()}
    verified = value.get("verified", True)
    if isinstance(verified, bool):
        checked = set(nums) if verified else set()
    elif isinstance(verified, list) and set(verified) <= set(nums):
        checked = set(verified)
    else:
        raise SpecError(f"{where}: verified: expected true, false or a list of the values checked against the "
                        f"paper (of {', '.join(sorted(nums))}), got {verified!r}")
    if set(nums) - checked:
        out["unverified"] = [k for k in PAPER_METRICS if k in nums and k not in checked]
    return out


def _parse_steps(items: list, kind: str, where: str) -> list[Step]:
    """The `ladder:` or `grid:` list -> steps; a ladder step's overrides include every step above it."""
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
    return steps


def _parse_teacher(t: Any, base_dict: dict, spec_dir: Path, where: str) -> dict | None:
    if t is None:
        return None
    if not isinstance(t, dict):
        raise SpecError(f"{where}: teacher: expected a mapping {{base, set}}")
    _check_keys(t, TEACHER_KEYS, f"{where}: teacher")
    tb = _load_base(t["base"], spec_dir, f"{where}: teacher.base") if "base" in t else base_dict
    return {"base_dict": tb, "set": _overrides(t.get("set"), f"{where}: teacher.set")}


def parse_spec(data: Any, path: Path | None = None, raw_text: str = "") -> Spec:
    """Check a spec mapping completely and expand its steps (no recipe validation yet: see expand)."""
    where = str(path) if path else "spec"
    spec_dir = path.parent if path else Path.cwd()
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping with base/set/seeds and ladder or grid")
    _check_keys(data, SPEC_KEYS, where)
    if ("ladder" in data) == ("grid" in data):
        raise SpecError(f"{where}: give exactly one of 'ladder' (cumulative steps) "
                        f"or 'grid' (independent alternatives)")
    kind = "ladder" if "ladder" in data else "grid"
    items = data[kind]
    if not isinstance(items, list) or not items:
        raise SpecError(f"{where}: {kind}: expected a non-empty list of steps {{name, set}}")
    base_dict = _load_base(data.get("base"), spec_dir, f"{where}: base")
    spec_set = _overrides(data.get("set"), f"{where}: set")
    steps = _parse_steps(items, kind, where)
    teacher = _parse_teacher(data.get("teacher"), base_dict, spec_dir, where)
    name = data.get("name") or (path.stem if path else "ablation")
    if not isinstance(name, str):
        raise SpecError(f"{where}: name: expected a string, got {name!r}")
    return Spec(path, name, str(data.get("description") or ""), kind, base_dict, spec_set,
                _seeds(data.get("seeds"), f"{where}: seeds"), steps, teacher, raw_text)


def load_spec(path: str | Path) -> Spec:
    """A spec file, or a shipped spec by name ("ablations/fmnist-table6", with or without .yaml): an existing
    file wins, as for recipes."""
    p = Path(path)
    if not p.is_file():
        shipped = brecipe.shipped_folder() / brecipe.SPECS_GROUP
        names = sorted(f"{brecipe.SPECS_GROUP}/{q.stem}" for q in shipped.glob("*.yaml"))
        name = str(path).removesuffix(".yaml")
        if name not in names:
            raise SpecError(f"ablation spec not found: {p} (neither a file nor a shipped spec"
                            f"{brecipe.suggest(name, names) or '; shipped: ' + ', '.join(names)})")
        p = shipped / f"{name.split('/', 1)[1]}.yaml"
    data, text = _read_yaml(p)
    return parse_spec(data, p, text)


def expand(spec: Spec, out: str | Path, seeds: tuple[int, ...] | None = None,
           extra: tuple[str, ...] = ()) -> list[Cell]:
    """Every cell of the sweep, teacher first; each cell's recipe is resolved and validated here.

    `extra` are command-line overrides applied to every cell after the spec's own.
    """
    seeds = tuple(seeds) if seeds is not None else spec.seeds
    where = str(spec.path) if spec.path else "spec"
    uses = [s for s in spec.steps if any(TEACHER_TOKEN in o for o in merge(spec.set, s.overrides, extra))]
    if uses and spec.teacher is None:
        raise SpecError(f"{where}: step '{uses[0].name}' uses {TEACHER_TOKEN} but the spec has no 'teacher' section")
    cells: list[Cell] = []
    if spec.teacher is not None:
        ov = merge(spec.set, spec.teacher["set"], extra)
        if any(TEACHER_TOKEN in o for o in ov):
            raise SpecError(f"{where}: teacher: the teacher cannot use {TEACHER_TOKEN}")
        cell = Cell("teacher", None, 0, TEACHER_DIR, ov)
        _resolve(spec.teacher["base_dict"], cell, f"{where}: teacher", brecipe.override_keys(extra))
        cells.append(cell)
    teacher_dir = str(Path(out).resolve() / TEACHER_DIR)
    for step in spec.steps:
        for seed in seeds:
            cells.append(_step_cell(spec, step, seed, extra, teacher_dir, where))
    return cells


def _step_cell(spec: Spec, step: Step, seed: int, extra: tuple[str, ...], teacher_dir: str, where: str) -> Cell:
    ov = merge(spec.set, step.overrides, extra)
    needs = any(TEACHER_TOKEN in o for o in ov)
    ov = merge(tuple(o.replace(TEACHER_TOKEN, teacher_dir).replace(SEED_TOKEN, str(seed)) for o in ov),
               (f"train.seed={seed}",))
    cell = Cell(f"{step.folder}/seed{seed}", step, seed, f"runs/{step.folder}/seed{seed}", ov, needs)
    w = f"{where}: {spec.kind} step {step.index} '{step.name}'"
    teacher = _resolve(spec.base_dict, cell, w, brecipe.override_keys(extra)).tricks.distill_teacher
    if teacher and not needs and not Path(teacher).exists():
        raise SpecError(f"{w}: tricks.distill_teacher: {teacher} does not exist "
                        f"(train it first, or use a 'teacher' section and {TEACHER_TOKEN})")
    return cell


def _resolve(base_dict: dict, cell: Cell, where: str, changed: frozenset[str] = frozenset()) -> brecipe.Recipe:
    """The cell's validated recipe; `changed` are the keys given on the command line (errors name them)."""
    try:
        r = brecipe.from_dict(base_dict)
        r = brecipe.apply_overrides(r, cell.overrides)
        return brecipe.validate(r, changed)
    except RecipeError as e:
        raise SpecError(f"{where}: {e}") from None


def cell_recipe(spec: Spec, cell: Cell) -> brecipe.Recipe:
    """The validated recipe a cell trains."""
    base = spec.teacher["base_dict"] if cell.is_teacher else spec.base_dict
    return _resolve(base, cell, cell.key)


def cell_task(spec: Spec, cell: Cell) -> str:
    """'detect' or 'segment' for a transfer cell (its data is a detection/segmentation dataset), '' for a
    classification cell: which command trains it."""
    from bagoftricks.data.catalog import TRANSFER_DATASETS
    r = cell_recipe(spec, cell)
    return r.transfer.task if r.data.name in TRANSFER_DATASETS else ""


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
