"""The report's PNG figures (matplotlib's Agg canvas through `Figure`, no pyplot state, no display).

    lr_schedule       Figure 3a: the lr of every iteration of each step, from the cell's recipe
    val_curves        Figure 3b: validation top-1 per epoch, mean over seeds with a min-max band (one
                      point per row when the runs evaluated a single epoch)
    delta_bars        Δ top-1 vs the first row per step, error bars = std of the per-seed difference;
                      green bars gain, red ones lose, each colour with its legend swatch
    logit_gap         Figure 4: distribution of true-class logit - largest other logit, with and
                      without label smoothing, against the optimum log((K-1)(1-ε)/ε)
    confusion         confusion matrix of one model on the test set
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bagoftricks.report.sweep import CellData, Row, Sweep  # noqa: E402

DPI = 110


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _per_row_curves(sweep: Sweep, figsize: tuple[float, float], draw: Callable[[Axes, int, Row], bool],
                    ylabel: str, title: str, path: Path, whole_epochs: bool = False) -> Path | None:
    """A plot against epochs with a curve per row, drawn by draw(ax, k, row) (False: that row has none);
    None when no row has one. whole_epochs: ticks on whole epochs only."""
    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    drawn = [draw(ax, k, row) for k, row in enumerate(sweep.rows)]
    if not any(drawn):
        return None
    if whole_epochs:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def _lr_points(cell: CellData, max_points: int = 1500) -> tuple[list[float], list[float]]:
    """(epochs, lrs) per iteration from the cell's recipe and steps per epoch; per epoch as a fallback."""
    from bagoftricks.engine.derive import run_steps, scheduled_lr
    r, env = cell.recipe, cell.env
    spe = env.get("steps_per_epoch")
    if r is not None and isinstance(spe, int) and spe > 0:
        world = max(1, int(env.get("world_size", 1) or 1))
        total = run_steps(r, spe)
        stride = max(1, total // max_points)
        its = list(range(0, total, stride))
        m = round(r.tricks.warmup_epochs * spe)
        if 0 < m < total and m not in its:  # keep the peak of the warmup ramp
            its = sorted(set(its) | {m, max(m - 1, 0)})
        if its[-1] != total - 1:
            its.append(total - 1)
        return [i / spe for i in its], [scheduled_lr(r, i, spe, world) for i in its]
    recs = [m for m in cell.metrics if "lr" in m]
    return [m["epoch"] for m in recs], [m["lr"] for m in recs]


def lr_schedule(sweep: Sweep, path: Path) -> Path | None:
    def draw(ax: Axes, k: int, row: Row) -> bool:
        cell = next((c for c in row.ok + row.cells if c.recipe is not None or c.metrics), None)
        x, y = _lr_points(cell) if cell is not None else ([], [])
        if x:
            ax.plot(x, y, label=row.name, lw=1.6, ls=("-", "--", ":", "-.")[k % 4])
        return bool(x)
    return _per_row_curves(sweep, (7.0, 3.8), draw, "learning rate",
                           f"{sweep.name}: learning rate per iteration (Figure 3a)", path)


def _val_top1_per_epoch(row: Row) -> dict[int, list[float]]:
    """Validation top-1 of every finished seed, by epoch."""
    per_epoch: dict[int, list[float]] = {}
    for c in row.ok:
        for m in c.metrics:
            if isinstance(m.get("val_top1"), (int, float)):
                per_epoch.setdefault(int(m["epoch"]), []).append(float(m["val_top1"]))
    return per_epoch


def val_curves(sweep: Sweep, path: Path) -> Path | None:
    """Figure 3b; when no row has more than one evaluated epoch, a point per row instead of curves."""
    if max((len(_val_top1_per_epoch(r)) for r in sweep.rows), default=0) == 1:
        return _val_points(sweep, path)

    def draw(ax: Axes, k: int, row: Row) -> bool:
        per_epoch = _val_top1_per_epoch(row)
        if not per_epoch:
            return False
        ep = sorted(per_epoch)
        mean = [sum(per_epoch[e]) / len(per_epoch[e]) for e in ep]
        # a marker and dash pattern per row, so that identical rows stay visible on top of each other
        (line,) = ax.plot(ep, mean, marker=_MARKERS[k % len(_MARKERS)] if len(ep) < 15 else None, ms=4, lw=1.6,
                          ls=_DASHES[k % len(_DASHES)], label=f"{row.name} (n={len(row.ok)})")
        if len(row.ok) > 1:
            ax.fill_between(ep, [min(per_epoch[e]) for e in ep], [max(per_epoch[e]) for e in ep],
                            color=line.get_color(), alpha=0.18, lw=0)
        return True
    return _per_row_curves(sweep, (7.0, 4.2), draw, "validation top-1 (%)",
                           f"{sweep.name}: validation top-1, mean over seeds, band = min-max (Figure 3b)", path,
                           whole_epochs=True)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", ":", "-.")


def val_points_figure(sweep: Sweep) -> Figure | None:
    """Validation top-1 after the only evaluated epoch: one point per row at its own place on the x axis
    (mean over seeds, bar = min-max), so that rows with equal numbers do not hide each other."""
    rows = [(r, [v for vs in _val_top1_per_epoch(r).values() for v in vs]) for r in sweep.rows]
    rows = [(r, v) for r, v in rows if v]
    if not rows:
        return None
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2.5), 3.8))
    ax = fig.subplots()
    for k, (r, vals) in enumerate(rows):
        m = sum(vals) / len(vals)
        ax.errorbar([k], [m], yerr=[[m - min(vals)], [max(vals) - m]], fmt=_MARKERS[k % len(_MARKERS)], ms=7,
                    capsize=4, label=f"{r.name} (n={len(vals)})")
    epochs = {e for r, _ in rows for e in _val_top1_per_epoch(r)}
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    when = f"epoch {min(epochs)}" if len(epochs) == 1 else "each row's last epoch"
    ax.set_ylabel(f"validation top-1 after {when} (%)")
    ax.set_title(f"{sweep.name}: validation top-1 (one evaluated epoch), bar = min-max over seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _val_points(sweep: Sweep, path: Path) -> Path | None:
    fig = val_points_figure(sweep)
    return None if fig is None else save(fig, path)


def delta_figure(sweep: Sweep) -> Figure | None:
    """Δ top-1 per row against the first; the legend has a swatch for each bar colour drawn."""
    rows = [r for r in sweep.rows[1:] if r.d_base is not None]
    if not rows or sweep.rows[0].top1_mean is None:
        return None
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2.5), 3.8))
    ax = fig.subplots()
    x = list(range(len(rows)))
    shown = lambda r: r.ci_base is not None and r.ci_base.estimable  # no bar for an interval the seeds cannot give
    err = [[max(0.0, r.d_base - r.ci_base.low) if shown(r) else 0.0 for r in rows],
           [max(0.0, r.ci_base.high - r.d_base) if shown(r) else 0.0 for r in rows]]
    colors = [_GAIN if r.d_base >= 0 else _LOSS for r in rows]
    ax.bar(x, [r.d_base for r in rows], yerr=err, capsize=4, color=colors, alpha=0.75)
    for i, r in enumerate(rows):
        if r.ci_base is not None and not r.ci_base.estimable:
            ax.annotate("no interval", (i, r.d_base), ha="center", va="bottom" if r.d_base >= 0 else "top",
                        fontsize=7, color="0.3")
    handles = [Patch(color=c, alpha=0.75, label=f"measured {what} (mean over seeds)")
               for c, what in ((_GAIN, "gain"), (_LOSS, "loss")) if c in colors]
    paper = [(i, r.paper_d_base) for i, r in enumerate(rows) if r.paper_d_base is not None]
    if paper:
        handles += ax.plot([i for i, _ in paper], [v for _, v in paper], "kD", ms=6, label="paper")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([r.name for r in rows], rotation=20, ha="right", fontsize=8)
    # the base row's name goes in the title, which wraps; a long one would not fit along the y axis
    base = textwrap.shorten(sweep.rows[0].name, 70, placeholder="…")
    ax.set_ylabel("Δ top-1 vs row 0 (points)")
    ax.set_title(f"{sweep.name}: Δ top-1 per step vs row 0, '{base}'\n(error bars: 95 % interval over seeds, "
                 f"paired)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8)
    return fig


_GAIN, _LOSS = "tab:green", "tab:red"


def delta_bars(sweep: Sweep, path: Path) -> Path | None:
    fig = delta_figure(sweep)
    return None if fig is None else save(fig, path)


def logit_gap(pairs: list[tuple[str, Any, float | None]], optimum: float, eps: float, path: Path) -> Path:
    """pairs: (label, gaps tensor, top1); optimum: the label-smoothing optimum gap."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.subplots()
    values = [g.numpy() for _, g, _ in pairs]
    lo = min(float(v.min()) for v in values)
    hi = max(max(float(v.max()) for v in values), optimum if math.isfinite(optimum) else -math.inf)
    bins = [lo + (hi - lo) * i / 60 for i in range(61)] if hi > lo else 30
    for (label, _, top1), v in zip(pairs, values):
        med = float(sorted(v)[len(v) // 2])
        ax.hist(v, bins=bins, density=True, alpha=0.5, label=f"{label} (top-1 {top1:.2f} %, median gap {med:.2f})")
    if math.isfinite(optimum):
        ax.axvline(optimum, color="black", ls="--", lw=1.2, label=f"optimum with ε={eps:g}: {optimum:.2f}")
    ax.axvline(0.0, color="gray", lw=0.8)
    ax.set_xlabel("true-class logit − largest other logit (test set)")
    ax.set_ylabel("density")
    ax.set_title("Logit gap with and without label smoothing (Figure 4)")
    ax.legend(fontsize=8)
    return save(fig, path)


def confusion(counts: Any, classes: list[str], title: str, path: Path) -> Path:
    k = counts.shape[0]
    rows = counts.sum(dim=1, keepdim=True).clamp(min=1)
    frac = (100.0 * counts / rows).numpy()
    side = min(10.0, 3.0 + 0.45 * k)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, label="% of the true class")
    if k <= 20:
        names = [str(c)[:14] for c in classes]
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
        for i in range(k):
            for j in range(k):
                if counts[i, j] > 0:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6,
                            color="white" if frac[i, j] > 50 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save(fig, path)
