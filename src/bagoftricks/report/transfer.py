"""The table of a sweep of transfer cells (`bagoftricks transfer`): mAP or mIoU and pixel accuracy per row.

One row per step: each score's mean ± std over seeds, Δ of the row's first score (mAP@0.5 for
detection, mIoU for segmentation) against the previous row and the first row that report the same
score (a sweep may hold detection rows and segmentation rows), and the classification top-1 of the
backbones the row's cells fine-tuned (their `bagoftricks train` runs' final val_top1), as Tables 8 and
9 of the paper put them side by side.
"""
from __future__ import annotations

from pathlib import Path

from bagoftricks.files import read_json_object
from bagoftricks.report.sweep import CellData, Row, Sweep, mean, std

SCORES = {"map_50": "mAP@0.5 (%)", "map": "mAP@[.5:.95] (%)", "miou": "mIoU (%)", "pixel_acc": "pixel acc. (%)"}


def is_transfer(sweep: Sweep) -> bool:
    return any(c.env.get("task") or any(k in c.final for k in SCORES) for c in sweep.cells)


def score_names(sweep: Sweep) -> list[str]:
    return [k for k in SCORES if any(isinstance(c.final.get(k), (int, float)) for c in sweep.cells)]


def _values(row: Row, name: str) -> list[float]:
    return [float(c.final[name]) for c in row.ok if isinstance(c.final.get(name), (int, float))]


def _backbone_top1(c: CellData) -> float | None:
    r = c.recipe
    if r is None or not r.model.pretrained:
        return None
    path = Path(r.model.pretrained)
    run = path if path.is_dir() else path.parent.parent
    top1 = read_json_object(run / "final.json").get("val_top1")
    return float(top1) if isinstance(top1, (int, float)) else None


def _pm(xs: list[float]) -> str:
    m, s = mean(xs), std(xs)
    return "—" if m is None else (f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}")


def table_block(sweep: Sweep) -> tuple:
    """("table", headers, rows, aligns) with one row per step (see the module docstring)."""
    names = score_names(sweep)
    headers = ["#", "step", "backbone top-1 (%)", *(SCORES[k] for k in names), "Δ prev", "Δ base", "n"]
    rows, prev, base = [], {}, {}
    for r in sweep.rows:
        key = next((k for k in names if _values(r, k)), None)  # the row's own first score
        first = mean(_values(r, key)) if key else None
        d_prev = "—" if first is None or key not in prev else f"{first - prev[key]:+.2f}"
        d_base = "—" if first is None else "(base)" if key not in base else f"{first - base[key]:+.2f}"
        if first is not None:
            base.setdefault(key, first)
            prev[key] = first
        tops = [t for t in (_backbone_top1(c) for c in r.ok) if t is not None]
        n = str(len(r.ok)) + (f" (+{len(r.failed)} failed)" if r.failed else "") + \
            (f" (+{len(r.pending)} pending)" if r.pending else "")
        rows.append([str(r.index), r.name, _pm(tops), *(_pm(_values(r, k)) for k in names), d_prev, d_base, n])
    return ("table", headers, rows, ["r", "l", "r", *("r" for _ in names), "r", "r", "r"])
