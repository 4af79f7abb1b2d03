"""Read an ablation folder (cells.json + results.jsonl + run folders) and summarise it per step.

Numbers are aggregated over the seeds whose cell finished ("ok"): mean and sample standard
deviation (n - 1 in the denominator; no std for a single seed). Δ vs previous row and Δ vs base are
differences of those means; each has a 95 % Student-t confidence interval over seeds, paired by seed
(report/stats.py: cells of the same seed share initialisation and data order, so the paired difference
is the less noisy one); the error bars of the Δ figure are that interval for Δ vs base.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from bagoftricks import recipe as brecipe
from bagoftricks.ablate.folder import CELLS, RESULTS, read_results
from bagoftricks.errors import RecipeError, UsageError
from bagoftricks.files import read_json_object, read_jsonl
from bagoftricks.report.stats import Interval, delta_interval, verdict


# numbers a cell's final.json holds and its results line may not (lines written before they were recorded)
FINAL_NUMBERS = ("val_top1", "val_top5", "val_tta_top1", "wall_seconds")


@dataclass
class CellData:
    key: str
    step: str
    index: int | None
    seed: int
    run_dir: Path
    result: dict | None

    @property
    def status(self) -> str:
        if self.result is None:
            return "ok" if (self.run_dir / "final.json").is_file() else "pending"
        if self.result.get("status") == "failed" and (self.run_dir / "final.json").is_file():
            return "ok"  # retried by hand and finished since
        return self.result.get("status", "pending")

    @cached_property
    def final(self) -> dict:
        return read_json_object(self.run_dir / "final.json")

    def value(self, name: str) -> Any:
        """The cell's number `name` from its results line, else (the final numbers) from its final.json."""
        v = (self.result or {}).get(name)
        if v is None and name in FINAL_NUMBERS:
            v = self.final.get(name)
        return v

    @cached_property
    def metrics(self) -> list[dict]:
        return read_jsonl(self.run_dir / "metrics.jsonl")

    @cached_property
    def env(self) -> dict:
        return read_json_object(self.run_dir / "env.json")

    @cached_property
    def recipe(self) -> brecipe.Recipe | None:
        try:
            return brecipe.from_dict(yaml.safe_load((self.run_dir / "recipe.yaml").read_text()))
        except (OSError, yaml.YAMLError, RecipeError):
            return None


@dataclass
class Row:
    index: int
    name: str
    folder: str
    paper: dict
    note: str
    cells: list[CellData]
    top1: list[float] = field(default_factory=list)
    top5: list[float] = field(default_factory=list)
    by_seed: dict = field(default_factory=dict)   # seed -> final top-1
    d_prev: float | None = None
    d_base: float | None = None
    d_base_err: float | None = None
    paper_d_prev: float | None = None
    paper_d_base: float | None = None
    ci_prev: Interval | None = None    # 95 % interval of Δ prev over seeds
    ci_base: Interval | None = None    # 95 % interval of Δ base over seeds
    reading: str = ""                  # the Δ the paper gives (prev in a ladder, base in a grid) read against it

    @property
    def ok(self) -> list[CellData]:
        return [c for c in self.cells if c.status == "ok"]

    @property
    def failed(self) -> list[CellData]:
        return [c for c in self.cells if c.status == "failed"]

    @property
    def pending(self) -> list[CellData]:
        return [c for c in self.cells if c.status == "pending"]

    @property
    def n(self) -> int:
        return len(self.top1)

    @property
    def top1_mean(self) -> float | None:
        return mean(self.top1)

    @property
    def top1_std(self) -> float | None:
        return std(self.top1)

    @property
    def top5_mean(self) -> float | None:
        return mean(self.top5)

    @property
    def top5_std(self) -> float | None:
        return std(self.top5)

    def avg(self, name: str) -> float | None:
        return mean([c.value(name) for c in self.ok])

    def first(self, name: str) -> Any:
        for c in self.ok + self.cells:
            v = c.value(name)
            if v is not None:
                return v
        return None


@dataclass
class Sweep:
    dir: Path
    name: str
    description: str
    kind: str
    plan: dict
    rows: list[Row]
    teacher: CellData | None

    @property
    def cells(self) -> list[CellData]:
        return [c for r in self.rows for c in r.cells]

    @property
    def has_paper(self) -> bool:
        return any(r.paper.get("top1") is not None for r in self.rows)


def mean(xs: Iterable) -> float | None:
    xs = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def std(xs: Iterable) -> float | None:
    xs = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.stdev(xs) if len(xs) >= 2 else None


def load_sweep(path: str | Path) -> Sweep:
    """The sweep in an ablation folder, summarised per step; a UsageError when the folder holds none."""
    d = Path(path)
    plan = read_json_object(d / CELLS)
    results = read_results(d)
    if not plan and not results:
        raise UsageError(f"report: {d} is not an ablation folder (no {CELLS} or {RESULTS}); "
                         f"run `bagoftricks ablate SPEC --out {d}` first")
    if not plan:
        plan = _plan_from_results(d, results)
    cells = _cells(d, plan, results)
    rows = []
    for s in plan.get("steps", []):
        rc = sorted((c for c in cells if c.index == s["index"]), key=lambda c: c.seed)
        rows.append(Row(s["index"], s["name"], s.get("folder", ""), dict(s.get("paper") or {}), s.get("note", ""), rc))
    teacher = next((c for c in cells if c.index is None), None)
    sweep = Sweep(d, plan.get("name") or d.name, plan.get("description", ""), plan.get("kind", "ladder"), plan,
                  rows, teacher)
    summarise(sweep)
    return sweep


def _plan_from_results(d: Path, results: dict[str, dict]) -> dict:
    """The steps and cells of a folder without cells.json, rebuilt from its results lines."""
    steps = {}
    for rec in results.values():
        if rec.get("index") is not None:
            steps[rec["index"]] = {"index": rec["index"], "name": rec["step"],
                                   "folder": Path(rec["run_dir"]).parent.name, "paper": {}, "note": ""}
    kind = next((r["kind"] for r in results.values() if r.get("kind") != "teacher"), "ladder")
    return {"name": d.name, "kind": kind, "steps": [steps[i] for i in sorted(steps)],
            "cells": [{"cell": r["cell"], "step": r["step"], "index": r.get("index"), "seed": r["seed"],
                       "run_dir": r["run_dir"]} for r in results.values()]}


def _cells(d: Path, plan: dict, results: dict[str, dict]) -> list[CellData]:
    """The plan's cells, and the cells of the plan's steps that an earlier run with more seeds left in
    results.jsonl (the plan is the latest run's)."""
    cells = [CellData(c["cell"], c["step"], c.get("index"), int(c.get("seed", 0)), d / c["run_dir"],
                      results.get(c["cell"])) for c in plan.get("cells", [])]
    planned = {c.key for c in cells}
    names = {s["index"]: s["name"] for s in plan.get("steps", [])}
    for key, rec in results.items():
        if key not in planned and rec.get("index") in names and rec.get("step") == names[rec["index"]]:
            cells.append(CellData(key, rec["step"], rec["index"], int(rec.get("seed", 0)), d / rec["run_dir"], rec))
    return cells


def summarise(sweep: Sweep) -> None:
    """Each row's per-seed numbers, and its Δ to the previous row and to the first (measured and paper)."""
    rows = sweep.rows
    for r in rows:
        r.top1 = [float(c.value("val_top1")) for c in r.ok if c.value("val_top1") is not None]
        r.top5 = [float(c.value("val_top5")) for c in r.ok if c.value("val_top5") is not None]
        r.by_seed = {c.seed: float(c.value("val_top1")) for c in r.ok if c.value("val_top1") is not None}
    base = rows[0] if rows else None
    for i, r in enumerate(rows):
        prev = rows[i - 1] if i > 0 else None
        if prev is not None and prev.top1_mean is not None and r.top1_mean is not None:
            r.d_prev = r.top1_mean - prev.top1_mean
        if base is not None and base.top1_mean is not None and r.top1_mean is not None:
            r.d_base = r.top1_mean - base.top1_mean
            common = sorted(set(r.by_seed) & set(base.by_seed))
            if r is not base and len(common) >= 2:
                r.d_base_err = statistics.stdev([r.by_seed[s] - base.by_seed[s] for s in common])
        _paper_deltas(r, prev, base)
        if prev is not None:
            r.ci_prev = delta_interval(r.by_seed, prev.by_seed)
        if base is not None and r is not base:
            r.ci_base = delta_interval(r.by_seed, base.by_seed)
        if r is not base:
            ladder = sweep.kind == "ladder"
            r.reading = verdict(r.ci_prev if ladder else r.ci_base, r.paper_d_prev if ladder else r.paper_d_base)


def _paper_deltas(r: Row, prev: Row | None, base: Row | None) -> None:
    p, pb = r.paper.get("top1"), base.paper.get("top1") if base else None
    if prev is not None and p is not None and prev.paper.get("top1") is not None:
        r.paper_d_prev = p - prev.paper["top1"]
    if p is not None and pb is not None:
        r.paper_d_base = p - pb


def _interval_json(iv: Interval | None) -> dict | None:
    return None if iv is None else {"delta": iv.delta, "low": iv.low, "high": iv.high, "n": iv.n,
                                    "paired": iv.paired, "excludes_zero": iv.excludes_zero,
                                    "estimable": iv.estimable}


def summary_json(sweep: Sweep) -> dict:
    """The table as data (written next to the report as report.json)."""
    return {
        "name": sweep.name, "kind": sweep.kind, "dir": str(sweep.dir),
        "rows": [{"index": r.index, "step": r.name, "n": r.n, "top1_mean": r.top1_mean, "top1_std": r.top1_std,
                  "top5_mean": r.top5_mean, "top5_std": r.top5_std, "delta_prev": r.d_prev, "delta_base": r.d_base,
                  "delta_base_err": r.d_base_err, "ci95_prev": _interval_json(r.ci_prev),
                  "ci95_base": _interval_json(r.ci_base), "reading": r.reading,
                  "images_per_sec": r.avg("images_per_sec"),
                  "seconds_per_epoch": r.avg("seconds_per_epoch"), "params": r.first("params"),
                  "macs": r.first("macs"), "paper": r.paper, "seeds": sorted(r.by_seed),
                  "failed": [{"cell": c.key, "reason": (c.result or {}).get("reason")} for c in r.failed],
                  "pending": [c.key for c in r.pending]} for r in sweep.rows],
        "teacher": None if sweep.teacher is None else {
            "status": sweep.teacher.status, "val_top1": sweep.teacher.value("val_top1"),
            "val_top5": sweep.teacher.value("val_top5")},
    }
