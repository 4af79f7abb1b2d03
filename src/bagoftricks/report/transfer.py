"""The table of a sweep of transfer cells (`bagoftricks transfer`): mAP or mIoU and pixel accuracy per row.

One row per step: each score's mean ± std over seeds, Δ of the row's first score (mAP@0.5 for
detection, mIoU for segmentation) against the previous row and the first row that report the same
score (a sweep may hold detection rows and segmentation rows), each with its 95 % interval over seeds
(paired by seed: seed k of every row fine-tunes the backbone of seed k on the same scenes), and the
classification top-1 of the backbones the row's cells fine-tuned (their `bagoftricks train` runs' final
val_top1), as Tables 8 and 9 of the paper put them side by side. `figure` plots each score against
that top-1.
"""
from __future__ import annotations

from pathlib import Path

from bagoftricks.files import read_json_object
from bagoftricks.report.stats import delta_interval, format_delta
from bagoftricks.report.sweep import CellData, Row, Sweep, mean, std

SCORES = {"map_50": "mAP@0.5 (%)", "map": "mAP@[.5:.95] (%)", "miou": "mIoU (%)", "pixel_acc": "pixel acc. (%)"}


def is_transfer(sweep: Sweep) -> bool:
    return any(c.env.get("task") or any(k in c.final for k in SCORES) for c in sweep.cells)


def score_names(sweep: Sweep) -> list[str]:
    return [k for k in SCORES if any(isinstance(c.final.get(k), (int, float)) for c in sweep.cells)]


def _by_seed(row: Row, name: str) -> dict[int, float]:
    return {c.seed: float(c.final[name]) for c in row.ok if isinstance(c.final.get(name), (int, float))}


def _values(row: Row, name: str) -> list[float]:
    return list(_by_seed(row, name).values())


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


def _delta(a: dict[int, float], b: dict[int, float]) -> str:
    """Δ = a − b of two rows' per-seed scores, with its 95 % interval (paired by seed)."""
    return format_delta(mean(list(a.values())) - mean(list(b.values())), delta_interval(a, b))


def table_block(sweep: Sweep) -> tuple:
    """("table", headers, rows, aligns) with one row per step (see the module docstring)."""
    names = score_names(sweep)
    headers = ["#", "step", "backbone top-1 (%)", *(SCORES[k] for k in names), "Δ prev [95 % CI]",
               "Δ base [95 % CI]", "n"]
    rows, prev, base = [], {}, {}
    for r in sweep.rows:
        key = next((k for k in names if _values(r, k)), None)  # the row's own first score
        seeds = _by_seed(r, key) if key else {}
        first = mean(list(seeds.values())) if key else None
        d_prev = "—" if first is None or key not in prev else _delta(seeds, prev[key])
        d_base = "—" if first is None else "(base)" if key not in base else _delta(seeds, base[key])
        if first is not None:
            base.setdefault(key, seeds)
            prev[key] = seeds
        tops = [t for t in (_backbone_top1(c) for c in r.ok) if t is not None]
        n = str(len(r.ok)) + (f" (+{len(r.failed)} failed)" if r.failed else "") + \
            (f" (+{len(r.pending)} pending)" if r.pending else "")
        rows.append([str(r.index), r.name, _pm(tops), *(_pm(_values(r, k)) for k in names), d_prev, d_base, n])
    return ("table", headers, rows, ["r", "l", "r", *("r" for _ in names), "r", "r", "r"])


NOTE = ("Δ columns: the Δ of the row's first score (mAP@0.5 for detection, mIoU for segmentation) in "
        "points against the previous row and the first row with the same score, and in brackets its 95 % "
        "Student-t interval over seeds, paired by seed (seed k of every row fine-tunes the backbone of "
        "seed k on the same scenes). **Bold**: the interval excludes 0.")


def figure(sweep: Sweep, path: Path) -> Path | None:
    """Each score against the backbone's top-1, a point per row (mean over seeds, bars: std over seeds,
    both ways), the rows of a task joined in their order, a row without a trained backbone (from scratch)
    as a dashed level; None when no row has both numbers."""
    from bagoftricks.report.figures import Figure, save
    names = score_names(sweep)
    panels = []
    for k in names:
        pts, flat = [], []     # rows with a trained backbone; rows without one (from scratch): a level
        for r in sweep.rows:
            vals = _values(r, k)
            tops = [t for t in (_backbone_top1(c) for c in r.ok) if t is not None]
            if vals and tops:
                pts.append((r.name, mean(tops), std(tops) or 0.0, mean(vals), std(vals) or 0.0))
            elif vals:
                flat.append((r.name, mean(vals)))
        if pts:
            panels.append((k, pts, flat))
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (k, pts, flat) in zip(axes, panels):
        xs, ys = [p[1] for p in pts], [p[3] for p in pts]
        ax.plot(xs, ys, "-", color="0.75", lw=1, zorder=1)
        for name, y in flat:
            ax.axhline(y, color="0.3", ls="--", lw=1, label=f"{name} (mean)")
        for i, (name, x, xe, y, ye) in enumerate(pts):
            ax.errorbar([x], [y], xerr=[xe], yerr=[ye], fmt="o", ms=6, capsize=3, color=f"C{i % 10}",
                        label=name, zorder=2)
        ax.set_xlabel("backbone top-1 (%)")
        ax.set_ylabel(SCORES[k])
        ax.set_title(SCORES[k].replace(" (%)", ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{sweep.name}: score against the backbone's classification top-1 "
                 "(mean over seeds, bars: std)", fontsize=10)
    return save(fig, path)

