"""What the cells of a sweep ran, read from their resolved recipe.yaml, next to what the spec asks for.

A sweep may run with extra `ablate --set` overrides (fewer images, fewer epochs) that the spec's text
does not know about. The report's "what each row changes" is therefore computed from the recipes the
cells trained, and every field where they differ from the spec's own recipe is listed, so that a
description written for the spec's settings is flagged instead of trusted.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bagoftricks import recipe as brecipe
from bagoftricks.ablate.folder import BASE
from bagoftricks.ablate.spec import SEED_TOKEN, TEACHER_TOKEN, format_value

__all__ = ["base_fields", "extra_overrides", "format_value", "ran_fields", "row_changes", "shown", "spec_fields",
           "spec_mismatches"]
from bagoftricks.engine.runfolder import recorded_asked
from bagoftricks.errors import RecipeError
from bagoftricks.report.sweep import Row, Sweep

# Fields that differ by cell or by machine, not by what a row measures.
IGNORED = frozenset({"train.seed", "train.threads", "train.resume"})


def _flat(r: brecipe.Recipe) -> dict[str, Any]:
    """The recipe's fields, the teacher's run folder (wherever the sweep lives) written as the spec's token."""
    f = {k: v for k, v in brecipe.flat(r).items() if k not in IGNORED}
    teacher = f.get("tricks.distill_teacher")
    if teacher and Path(teacher).parts[-2:] == ("runs", "teacher"):
        f["tricks.distill_teacher"] = TEACHER_TOKEN
    return f


def base_fields(sweep: Sweep) -> dict[str, Any] | None:
    """The sweep's resolved base recipe (base.yaml), before the spec's `set`."""
    try:
        return _flat(brecipe.from_dict(brecipe.read_yaml(sweep.dir / BASE)))
    except (OSError, RecipeError):
        return None


def ran_fields(row: Row, sweep: Sweep | None = None) -> dict[str, Any] | None:
    """The recipe the row's cells trained (a finished cell's first), or None when no cell has one yet. With
    the sweep, a field the spec sets through the seed token ("{seed}") is written back as the token when it
    is what the token gave this cell's seed (seed k's backbone is not a difference between seeds)."""
    cell = next((c for c in row.ok + row.cells if c.recipe is not None), None)
    if cell is None:
        return None
    asked, spec = recorded_asked(cell.run_dir), _spec_recipe(sweep, row) if sweep is not None else None
    # read as the run the cell was asked (the spec and `ablate --set`): its budget, not the steps the budget chose
    # nor the milestones moved with them; precision auto, not what auto chose
    if spec is None:
        ran = brecipe.as_asked(cell.recipe, asked)
    else:
        given = _spec_recipe(sweep, row, extra=True) if extra_overrides(sweep) else spec
        ran = brecipe.as_run_of(given or spec, cell.recipe, asked)
    fields = _flat(ran)
    if spec is not None:
        with_token, with_seed = _flat(spec), spec_fields(sweep, row, cell.seed)
        if with_seed is not None:
            for k, v in with_token.items():
                if v != with_seed[k] and fields.get(k) == with_seed[k]:
                    fields[k] = v
    return fields


def _spec_recipe(sweep: Sweep, row: Row, seed: int | None = None, extra: bool = False) -> brecipe.Recipe | None:
    """The recipe the spec alone gives the row: base.yaml + the spec's set + the step's overrides (with the
    seed token replaced by `seed` when one is given), + the sweep's `ablate --set` overrides with `extra`; None when
    base.yaml cannot be read."""
    step = next((s for s in sweep.plan.get("steps", []) if s["index"] == row.index), None)
    overrides = [*sweep.plan.get("set", []), *(step or {}).get("overrides", []),
                 *(extra_overrides(sweep) if extra else [])]
    if seed is not None:
        overrides = [o.replace(SEED_TOKEN, str(seed)) for o in overrides]
    try:
        return brecipe.apply_overrides(brecipe.from_dict(brecipe.read_yaml(sweep.dir / BASE)), overrides)
    except (OSError, RecipeError):
        return None


def spec_fields(sweep: Sweep, row: Row, seed: int | None = None) -> dict[str, Any] | None:
    """`_spec_recipe`'s fields."""
    r = _spec_recipe(sweep, row, seed)
    return None if r is None else _flat(r)


def extra_overrides(sweep: Sweep) -> list[str]:
    """The `ablate --set` overrides the sweep ran with (from cells.json, or its recorded command line)."""
    if "extra" in sweep.plan:
        return list(sweep.plan["extra"])
    argv = list(sweep.plan.get("argv") or [])
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"]


def _items(fields: dict[str, Any], keys) -> list[str]:
    return [f"{k}={format_value(fields[k])}" for k in keys]


def row_changes(sweep: Sweep) -> tuple[list[str], dict[int, list[str] | None]]:
    """(what every row sets on top of base.yaml, what each row changes) as "key=value" items, from the
    recipes the cells ran: a ladder row against the row above it, a grid row against the common part.
    A row without a recipe yet maps to None."""
    base = base_fields(sweep)
    ran = {r.index: ran_fields(r, sweep) for r in sweep.rows}
    known = [f for f in ran.values() if f is not None]
    if base is None or not known:
        return [], {r.index: None for r in sweep.rows}
    common_keys = [k for k in base if all(f[k] != base[k] and f[k] == known[0][k] for f in known)]
    ref = {**base, **{k: known[0][k] for k in common_keys}}
    changes: dict[int, list[str] | None] = {}
    prev = ref
    for r in sweep.rows:
        f = ran[r.index]
        changes[r.index] = None if f is None else _items(f, [k for k in f if f[k] != prev[k]])
        if sweep.kind == "ladder" and f is not None:
            prev = f
    return _items(known[0], common_keys), changes


def spec_mismatches(sweep: Sweep) -> list[tuple[str, Any, Any]]:
    """(key, the spec's value, the value the cells ran with) for every field where a row's cells did not
    run what the spec alone gives it (first row where it differs)."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for r in sweep.rows:
        ran, spec = ran_fields(r, sweep), spec_fields(sweep, r)
        if ran is None or spec is None:
            continue
        for k in ran:
            if ran[k] != spec[k] and k not in out:
                out[k] = (k, spec[k], ran[k])
    return list(out.values())


def shown(items: list[str]) -> str:
    """`a=1`, `b=2` (quoted as a shell would need them)."""
    return ", ".join(f"`{shlex.quote(i) if ' ' in i else i}`" for i in items) if items else "(none)"
