"""The page of `bagoftricks report` (make_report): a section per sweep (blocks.py: its table and notes;
here: its figures), "how to reproduce" (the ablate commands, the environment, the compute), written
as Markdown, HTML (figures inlined) and JSON (the tables as data).

matplotlib (figures) and torch (predict) are imported only while a page is made.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

from bagoftricks.ablate.spec import slugify
from bagoftricks.errors import UsageError
from bagoftricks.files import atomic_write_text
from bagoftricks.report import transfer
from bagoftricks.report.blocks import changes_blocks, intro_blocks, paper_note, status_blocks, table_block
from bagoftricks.report.render import to_html, to_markdown
from bagoftricks.report.sweep import CellData, Sweep, load_sweep, summary_json

FIGURE_KINDS = ("lr", "val-top1", "delta", "logit-gap", "confusion", "scores")  # figures/SWEEP-KIND.png


def _fig_path(fig_dir: Path, slug: str, kind: str) -> Path:
    assert kind in FIGURE_KINDS, kind
    return fig_dir / f"{slug}-{kind}.png"


def _best(cells: list[CellData]) -> CellData | None:
    cells = [c for c in cells if c.status == "ok" and c.value("val_top1") is not None]
    return max(cells, key=lambda c: c.value("val_top1")) if cells else None


def _figure(path: Path | None, caption: str) -> list[tuple]:
    """The block of a figure that was drawn (none when there was nothing to draw)."""
    return [] if path is None else [("figure", str(path), caption)]


def _curve_figures(sweep: Sweep, fig_dir: Path, slug: str) -> list[tuple]:
    from bagoftricks.report import figures
    first = sweep.rows[0].name if sweep.rows else ""
    return (_figure(figures.lr_schedule(sweep, _fig_path(fig_dir, slug, "lr")),
                    f"{sweep.name}: learning rate of every iteration of each step (from the cell's recipe).")
            + _figure(figures.val_curves(sweep, _fig_path(fig_dir, slug, "val-top1")),
                      f"{sweep.name}: validation top-1 per epoch, mean over seeds, min–max over seeds shaded (after a "
                      f"single evaluated epoch: a point per row, the bar spanning min–max).")
            + _figure(figures.delta_bars(sweep, _fig_path(fig_dir, slug, "delta")),
                      f"{sweep.name}: Δ top-1 vs '{first}', error bars = the 95 % Student-t interval over seeds "
            f"(paired by seed)."))


Predicted = Callable[[CellData], dict]


def _logit_gap_figure(sweep: Sweep, fig_dir: Path, slug: str, predicted: Predicted) -> list[tuple]:
    """Figure 4: the logit gaps of the best cell with label smoothing and the best without; a line that
    says why when the sweep lacks one of the two."""
    from bagoftricks.report import figures
    from bagoftricks.report.predict import logit_gaps
    from bagoftricks.tricks import optimal_logit_gap
    ok = [c for c in sweep.cells if c.status == "ok" and c.recipe is not None]
    with_ls = _best([c for c in ok if c.recipe.tricks.label_smoothing > 0])
    without = _best([c for c in ok if c.recipe.tricks.label_smoothing == 0])
    if with_ls is None or without is None:
        lacking = "uses label smoothing (tricks.label_smoothing > 0)" if with_ls is None else "trains without it"
        return [("p", f"Figure 4 (the logit gap with and without label smoothing) is not drawn: no finished cell "
                      f"of this sweep {lacking}.")]
    eps, form = with_ls.recipe.tricks.label_smoothing, with_ls.recipe.tricks.label_smoothing_form
    pairs = []
    for c, label in ((without, "no label smoothing"), (with_ls, f"label smoothing ε={eps:g}")):
        p = predicted(c)
        pairs.append((f"{label}: {c.step}/seed{c.seed}", logit_gaps(p["logits"], p["labels"]), p["top1"]))
    k = int(predicted(with_ls)["logits"].shape[1])
    opt = optimal_logit_gap(k, eps, form)
    return _figure(figures.logit_gap(pairs, opt, eps, _fig_path(fig_dir, slug, "logit-gap")),
                   f"{sweep.name}: distribution of the test-set gap between the true-class logit and the largest "
                   f"other logit, for the best cell with label smoothing and the best without; dashed: the optimum "
                   + ("log((K−1)(1−ε)/ε)" if form == "paper" else "log(1 + K(1−ε)/ε) (uniform form)")
                   + f" = {opt:.2f} for K = {k}, ε = {eps:g} (Figure 4).")


def _confusion_figure(sweep: Sweep, fig_dir: Path, slug: str, predicted: Predicted) -> list[tuple]:
    """The confusion matrix of the best cell on the test set."""
    from bagoftricks.report import figures
    from bagoftricks.report.predict import confusion_matrix
    best = _best(sweep.cells)
    if best is None:
        return []
    p = predicted(best)
    counts = confusion_matrix(p["logits"], p["labels"], int(p["logits"].shape[1]))
    return _figure(figures.confusion(counts, p["classes"], f"{sweep.name}: {best.key} (top-1 {p['top1']:.2f} %)",
                                     _fig_path(fig_dir, slug, "confusion")),
                   f"{sweep.name}: confusion matrix of the best cell, `{best.key}` (row-normalised colour, "
                   f"counts in the cells).")


def _prediction_figures(sweep: Sweep, fig_dir: Path, slug: str, device: str,
                        echo: Callable[[str], None]) -> tuple[list[tuple], list[str]]:
    """The figures that evaluate checkpoints on the test set (each cell once), and a note for each
    figure that could not be made."""
    cache: dict[str, dict] = {}

    def predicted(cell: CellData) -> dict:
        if cell.key not in cache:
            from bagoftricks.report.predict import logits_on_test_set
            echo(f"report: test-set logits of {cell.run_dir}")
            cache[cell.key] = logits_on_test_set(cell.run_dir, device=device)
        return cache[cell.key]

    blocks: list[tuple] = []
    notes: list[str] = []
    for make, what in ((_logit_gap_figure, "logit-gap figure"), (_confusion_figure, "confusion matrix")):
        try:
            blocks += make(sweep, fig_dir, slug, predicted)
        except Exception as e:  # noqa: BLE001 - a figure must not sink the report
            notes.append(f"{what} skipped: {type(e).__name__}: {e}")
    return blocks, notes


def sweep_blocks(sweep: Sweep, fig_dir: Path, predict: bool, device: str, echo: Callable[[str], None]) -> list[tuple]:
    """The section of one sweep: its table, what each row changes, the cells that did not finish, figures."""
    slug = slugify(sweep.name)
    if transfer.is_transfer(sweep):  # detection/segmentation cells: their scores; no top-1 figures
        from bagoftricks.report import figures
        blocks = intro_blocks(sweep) + [transfer.table_block(sweep), ("p", transfer.NOTE)]
        blocks += changes_blocks(sweep) + status_blocks(sweep)
        blocks += _figure(transfer.figure(sweep, _fig_path(fig_dir, slug, "scores")),
                          f"{sweep.name}: each score against the classification top-1 of the backbones "
                          "(mean over seeds; bars: std over seeds).")
        return blocks + _figure(figures.lr_schedule(sweep, _fig_path(fig_dir, slug, "lr")),
                                f"{sweep.name}: learning rate of every iteration of each step.")
    blocks = intro_blocks(sweep) + [table_block(sweep)] + paper_note(sweep)
    blocks += changes_blocks(sweep) + status_blocks(sweep)
    blocks += _curve_figures(sweep, fig_dir, slug)
    if predict:
        figs, notes = _prediction_figures(sweep, fig_dir, slug, device, echo)
        blocks += figs
        if notes:
            blocks.append(("list", notes))
    else:
        blocks.append(("p", "Figure 4 (logit gap) and the confusion matrix are not drawn: the report was made "
                            "with --no-predict."))
    return blocks


def _env_line(sweeps: list[Sweep]) -> str:
    """The environment of the first cell with one, and the torch threads per cell of every sweep: sweeps
    run with different `--jobs` (one cell at a time with two threads, two cells with one each) differ."""
    first, per_sweep = None, []
    for s in sweeps:
        threads: list[str] = []
        for c in s.cells:
            if e := c.env:
                first = first or e
                t = str(e.get("torch_threads", "?"))
                if t not in threads:
                    threads.append(t)
        if threads:
            per_sweep.append((s.name, "/".join(threads)))
    if first is None:
        return ""
    if len({t for _, t in per_sweep}) == 1:
        per_cell = f"{per_sweep[0][1]} torch thread(s) per cell"
    else:
        per_cell = "torch threads per cell: " + ", ".join(f"{n} {t}" for n, t in per_sweep)
    e = first
    return (f"Measured with bagoftricks {e.get('bagoftricks', '?')} (git {e.get('git_sha') or 'unknown'}), "
            f"torch {e.get('torch', '?')}, Python {e.get('python', '?')}, on {e.get('device', '?')} "
            f"({e.get('device_name', '?')}, {e.get('cpu_count', '?')} cores, {per_cell}).")


def _ablate_argv(s: Sweep) -> list[str]:
    """The sweep's ablate command with `--only` naming the steps that have results: the folder may have been
    filled by several commands with different `--only` (cells.json keeps the last), and a step nobody ran
    is not part of what the page shows."""
    argv, rest = [], list(s.plan.get("argv") or [])
    if not rest:
        return []
    while rest:
        a = rest.pop(0)
        if a == "--only":
            rest = rest[1:]
        elif not a.startswith("--only="):
            argv.append(a)
    ran = [r.index for r in s.rows if any(c.status in ("ok", "failed") for c in r.cells)]
    if ran and len(ran) < len(s.rows):
        argv += ["--only", ",".join(str(i) for i in ran)]
    return argv


def _reproduce(sweeps: list[Sweep], report_argv: list[str] | None) -> list[tuple]:
    lines = []
    total = 0.0
    for s in sweeps:
        argv = _ablate_argv(s)
        if argv:
            lines.append(shlex.join(argv))
        else:
            lines.append(f"bagoftricks ablate {s.plan.get('spec') or 'SPEC.yaml'} --out {s.dir}")
        cells = s.cells + ([s.teacher] if s.teacher else [])
        total += sum((c.result or {}).get("elapsed_seconds") or 0.0 for c in cells)
    if report_argv:
        lines.append(shlex.join(report_argv))
    blocks = [("h2", "How to reproduce"),
              ("p", "Run from the repository root (`make setup` first). Re-running an `ablate` command skips finished "
                    "cells and resumes interrupted ones, so an interrupted sweep continues where it stopped; "
                    "`--retry-failed` starts failed cells afresh."),
              ("code", "\n".join(lines))]
    env = _env_line(sweeps)
    if total:
        env += f" Total compute of these sweeps: {total / 3600:.2f} cell-hours (sum of the cells' wall times)."
    if env:
        blocks.append(("p", env.strip()))
    blocks.append(("p", "Each cell's exact `bagoftricks train` command is in the sweep folder's `cells.json`; "
                        "each run folder holds its resolved `recipe.yaml`, `env.json` and `metrics.jsonl`."))
    return blocks


def _page_path(dirs: list[str | Path], out: str | Path | None) -> Path:
    """Where the Markdown page goes: DIR/report.md by default; --out FILE.md, or a folder for its report.md."""
    if out is None:
        return Path(dirs[0]) / "report.md"
    md_path = Path(out)
    if md_path.suffix.lower() != ".md":
        md_path = md_path / "report.md" if md_path.is_dir() or not md_path.suffix else md_path.with_suffix(".md")
    return md_path


def _check_figures_are_ours(md_path: Path, slugs: list[str]) -> None:
    """Figures are named after their sweep (figures/SWEEP-lr.png ...): a second page of the same sweeps in
    the same folder would overwrite the figures another page links to. Refuse before writing anything."""
    if not md_path.parent.is_dir():
        return
    for other in sorted(md_path.parent.glob("*.md")):
        if other.resolve() == md_path.resolve():
            continue
        try:
            text = other.read_text(errors="replace")
        except OSError:
            continue
        for slug in slugs:
            if re.search(rf"\]\(figures/{re.escape(slug)}-({'|'.join(FIGURE_KINDS)})\.png\)", text):
                raise UsageError(f"report: {other} links figures of sweep {slug!r} in {md_path.parent / 'figures'}, "
                                 f"which this page would overwrite; write {md_path.name} to another folder "
                                 f"(--out OTHER/{md_path.name})")


def _header_blocks(title: str) -> list[tuple]:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [("h1", title),
            ("p", f"Generated by `bagoftricks report` on {now}. Top-1/top-5: test accuracy (%) of each cell's final "
                  f"epoch, mean ± sample std (n−1) over the seeds that finished; Δ in points between row means. "
                  f"img/s: training images per second, s/epoch: wall seconds per epoch including evaluation, both "
                  f"averaged over epochs and seeds; run s: the whole run's wall seconds (start-up to the last "
                  f"evaluation), mean over seeds. TTA top-1, where the cells evaluated with test-time augmentation "
                  f"(`tricks.tta`): the same weights' top-1 with it. steps (budget), where the cells were sized by "
                  f"`train.budget`: the optimizer steps the budget chose on the cell's machine, mean over seeds (a "
                  f"slower step gets fewer). params and MACs (multiply-accumulates per image "
                  f"at data.image_size, the size it is tested at: progressive resizing trains earlier epochs "
                  f"smaller) of the step's model.")]


def make_report(dirs: list[str | Path], out: str | Path | None = None, title: str | None = None,
                predict: bool = True, html: bool = True, device: str = "cpu",
                echo: Callable[[str], None] = print, argv: list[str] | None = None) -> dict:
    """Write the report; returns {"markdown", "html", "json", "figures"} paths."""
    sweeps = [load_sweep(d) for d in dirs]
    md_path = _page_path(dirs, out)
    fig_dir = md_path.parent / "figures"
    _check_figures_are_ours(md_path, [slugify(s.name) for s in sweeps])
    if not title:
        title = f"Ablation: {sweeps[0].name}" if len(sweeps) == 1 else "Ablations: " + ", ".join(s.name for s in sweeps)
    blocks = _header_blocks(title)
    for s in sweeps:
        blocks += sweep_blocks(s, fig_dir, predict, device, echo)
    blocks += _reproduce(sweeps, argv)
    atomic_write_text(md_path, to_markdown(blocks, md_path))
    paths = {"markdown": str(md_path), "figures": [b[1] for b in blocks if b[0] == "figure"]}
    if html:
        paths["html"] = str(md_path.with_suffix(".html"))
        atomic_write_text(paths["html"], to_html(blocks, title))
    paths["json"] = str(md_path.with_suffix(".json"))
    atomic_write_text(paths["json"], json.dumps({"title": title, "sweeps": [summary_json(s) for s in sweeps]},
                                                indent=2) + "\n")
    return paths
