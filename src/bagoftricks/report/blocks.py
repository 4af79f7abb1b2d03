"""The text blocks of one sweep's section: its table (top-1/top-5 mean ± std over seeds, the Δs with their
95 % intervals, the paper's number and its reading, speed and size), the note that says how to read it,
the sweep's title and description, what each row changes, and the cells that did not finish.

Blocks are the tuples render.py turns into Markdown and HTML (its docstring lists them).
"""
from __future__ import annotations

from collections.abc import Iterable

from bagoftricks.report import ran, stats
from bagoftricks.report.sweep import Sweep, mean, std


def _fmt_pm(m: float | None, s: float | None) -> str:
    if m is None:
        return "—"
    return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"


def _fmt_si(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    v = float(v)
    for div, suf in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}{unit}"
    return f"{v:.3g}{unit}"


def _fmt_f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(float(v), spec)


def _code(items: Iterable[str]) -> str:
    return ", ".join(f"`{o}`" for o in items) if items else "(none)"


def table_block(sweep: Sweep) -> tuple:
    """The sweep's table: one row per step, seed means ± std, Δs, the paper's number, speed and size."""
    tta = any(c.value("val_tta_top1") is not None for c in sweep.cells if c.status == "ok")
    headers = ["#", "step", "top-1 (%)", "top-5 (%)", *(["TTA top-1 (%)"] if tta else []),
               "Δ prev [95 % CI]", "Δ base [95 % CI]"]
    aligns = ["r", "l", "r", "r", *(["r"] if tta else []), "r", "r"]
    if sweep.has_paper:
        headers += ["paper top-1 (Δ prev)", "vs paper"]
        aligns += ["r", "l"]
    budgeted = any(c.env.get("budget") for c in sweep.cells if c.status == "ok")  # train.budget chose each length
    headers += [*(["steps (budget)"] if budgeted else []), "img/s", "s/epoch", "run s", "params", "MACs", "n"]
    aligns += ["r"] * (6 + budgeted)
    rows = []
    for r in sweep.rows:
        row = [str(r.index), r.name, _fmt_pm(r.top1_mean, r.top1_std), _fmt_pm(r.top5_mean, r.top5_std)]
        if tta:
            t = [c.value("val_tta_top1") for c in r.ok if c.value("val_tta_top1") is not None]
            row += [_fmt_pm(mean(t), std(t))]
        row += [stats.format_delta(r.d_prev, r.ci_prev),
                "(base)" if r is sweep.rows[0] else stats.format_delta(r.d_base, r.ci_base)]
        if sweep.has_paper:
            p = r.paper.get("top1")
            dp = f" ({r.paper_d_prev:+.2f})" if r.paper_d_prev is not None else ""
            mark = " (r)" if "top1" in r.paper.get("unverified", ()) else ""
            row += ["—" if p is None else f"{p:.2f}{mark}{dp}", r.reading or "—"]
        n = f"{r.n}"
        if r.failed:
            n += f" (+{len(r.failed)} failed)"
        if r.pending:
            n += f" (+{len(r.pending)} pending)"
        if budgeted:
            row += [_fmt_f(mean([c.recipe.train.steps for c in r.ok if c.recipe is not None]), ",.0f")]
        row += [_fmt_f(r.avg("images_per_sec"), ",.0f"), _fmt_f(r.avg("seconds_per_epoch"), ".1f"),
                _fmt_f(r.avg("wall_seconds"), ".0f"), _fmt_si(r.first("params")), _fmt_si(r.first("macs")), n]
        rows.append(row)
    return ("table", headers, rows, aligns)


def paper_note(sweep: Sweep) -> list[tuple]:
    """What the brackets, the bold Δs, "n/a", "vs paper" and "(r)" mean, and the rows grouped by their reading."""
    paired = all(iv.paired for r in sweep.rows for iv in (r.ci_prev, r.ci_base) if iv is not None)
    how = ("paired by seed: seed k of every row shares its initialisation, data order and augmentation draws, so "
           "the per-seed differences leave out the noise the two cells share" if paired else
           "paired by seed where two rows share at least two seeds (they share initialisation and data order), "
           "else Welch's interval for two independent samples")
    text = (f"Δ columns: the Δ in points and, in brackets, its 95 % Student-t confidence interval over seeds, {how}. "
            f"**Bold**: the interval excludes 0.")
    if any(iv is not None and not iv.estimable for r in sweep.rows for iv in (r.ci_prev, r.ci_base)):
        text += (" n/a: the seeds show no spread (every seed gave the same Δ, or there is one seed), so they cannot "
                 "estimate their own noise: no interval, never bold.")
    blocks: list[tuple] = [("p", text)]
    if sweep.has_paper:
        which = "Δ prev" if sweep.kind == "ladder" else "Δ base"
        blocks.append(("p", f"vs paper: the measured {which} against the paper's — “{stats.AGREES}” (the interval "
                            f"excludes 0 and the sign is the paper's), “{stats.OPPOSITE}” (it excludes 0 with the "
                            f"other sign), “{stats.NOISE}” (it contains 0: these seeds cannot tell the trick's "
                            f"effect from seed noise), “{stats.NOT_ESTIMABLE}” (n/a: no interval)."))
        readings = (stats.AGREES, stats.OPPOSITE, stats.NOISE, stats.NOT_ESTIMABLE, stats.SIGNIFICANT)
        groups = {k: [r.name for r in sweep.rows if r.reading == k] for k in readings}
        blocks.append(("list", [f"{k}: {', '.join(v)}" for k, v in groups.items() if v]))
    if any("top1" in r.paper.get("unverified", ()) for r in sweep.rows):
        blocks.append(("p", "(r): the paper's value as recalled, not verified against the paper's text "
                            "(`verified: false` in the spec); treat it as a target to check."))
    return blocks


def _noted(v: object) -> str:
    return "unset" if v == "" else ran.format_value(v)  # an empty field (train.budget: "") would print as nothing


def intro_blocks(sweep: Sweep) -> list[tuple]:
    """The sweep's title and description, the command line's extra overrides, and a note on every
    setting the cells ran with other than the spec's (a description written for the spec may be stale)."""
    blocks: list[tuple] = [("h2", f"{sweep.name}")]
    if sweep.description:
        blocks.append(("p", sweep.description))
    differ = ran.spec_mismatches(sweep)
    if differ:
        what = ", ".join(f"`{k}` {_noted(v)} (spec: {_noted(s)})" for k, s, v in differ)
        lead = ("the description above is the spec's, but these cells ran with other settings" if sweep.description
                else "these cells ran with settings other than the spec's")
        blocks.append(("p", f"**Note:** {lead}: {what}. The numbers below are for the settings the cells ran."))
    how = ("Ladder: each row adds its overrides to every row above it (cumulative)." if sweep.kind == "ladder"
           else "Grid: each row is the base recipe plus its own overrides only.")
    seeds = sweep.plan.get("seeds") or sorted({c.seed for c in sweep.cells})
    blocks.append(("p", f"{how} Seeds: {', '.join(str(s) for s in seeds)}. Sweep folder: `{sweep.dir}`."))
    extra = ran.extra_overrides(sweep)
    if extra:
        blocks.append(("p", f"Run with extra overrides for every cell (`ablate --set`): {ran.shown(extra)}."))
    return blocks


def changes_blocks(sweep: Sweep) -> list[tuple]:
    """What each row changes, from the recipe.yaml its cells ran: the fields every row sets on top of the
    base recipe, then each row's own (the spec's overrides for a row that has not run yet)."""
    common, changes = ran.row_changes(sweep)
    steps = {s["index"]: s for s in sweep.plan.get("steps", [])}
    items = [f"every row: {ran.shown(common)}"] if common else []
    for r in sweep.rows:
        own = changes.get(r.index)
        if own is None:
            own_text = f"{_code(steps.get(r.index, {}).get('set', []))} (the spec's; no cell has run yet)"
        else:
            own_text = ran.shown(own)
        note = f" — {r.note}" if r.note else ""
        items.append(f"**{r.name}**: {own_text}{note}")
    return [("p", "What each row changes (from the `recipe.yaml` its cells ran; "
                  + ("against the row above):" if sweep.kind == "ladder" else "against the base recipe):")),
            ("list", items)]


def status_blocks(sweep: Sweep) -> list[tuple]:
    """The teacher's result, the failed cells with their reasons, the cells not run yet."""
    blocks: list[tuple] = []
    if sweep.teacher is not None:
        t = sweep.teacher
        top = t.value("val_top1")
        blocks.append(("p", f"Distillation teacher (`{t.run_dir.relative_to(sweep.dir)}`): {t.status}"
                            + (f", top-1 {top:.2f} %, top-5 {t.value('val_top5'):.2f} %" if top is not None else "")
                            + (f" — {(t.result or {}).get('reason')}" if t.status == "failed" else "") + "."))
    failed = [c for r in sweep.rows for c in r.failed]
    if failed:
        blocks.append(("p", f"Failed cells ({len(failed)}; not in the means above):"))
        blocks.append(("list", [f"`{c.key}`: {(c.result or {}).get('reason') or 'unknown reason'}" for c in failed]))
    pending = [c.key for r in sweep.rows for c in r.pending]
    if pending:
        blocks.append(("p", f"Not run yet ({len(pending)}): {', '.join(f'`{k}`' for k in pending[:12])}"
                            + (" …" if len(pending) > 12 else "")))
    return blocks

