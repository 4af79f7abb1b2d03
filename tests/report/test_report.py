"""`bagoftricks report`: tables whose numbers are the seed means of results.jsonl (recomputed here
independently), failed and pending cells listed, non-empty PNG figures, a self-contained HTML page."""
from __future__ import annotations

import base64
import json
import re
import statistics
import struct
from pathlib import Path

import pytest
import torch

from bagoftricks.cli import main
from bagoftricks.report import make_report
from bagoftricks.report.predict import confusion_matrix, logit_gaps

from .conftest import TINY_BASE, build_sweep

PNG = b"\x89PNG\r\n\x1a\n"


def _results(d: Path) -> list[dict]:
    latest = {}
    for line in (d / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        latest[rec["cell"]] = rec
    return list(latest.values())


def _table_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if re.match(r"^\| \d+ \|", line):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[1]] = cells
    return rows


def _png_ok(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG, path
    w, h = struct.unpack(">II", data[16:24])  # IHDR
    assert len(data) > 5000 and w > 200 and h > 200, (path, len(data), w, h)


@pytest.fixture(scope="module")
def report(tiny_sweep):
    paths = make_report([tiny_sweep], echo=lambda s: None)
    return paths, Path(paths["markdown"]).read_text()


def test_table_holds_seed_means_and_deltas(tiny_sweep, report):
    paths, md = report
    recs = _results(tiny_sweep)
    rows = _table_rows(md)
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    cols = [c.strip() for c in header.strip().strip("|").split(" | ")]
    col = {name: i for i, name in enumerate(cols)}
    means = {}
    for step in ("baseline", "+ label smoothing"):
        ok = [r for r in recs if r["step"] == step and r["status"] == "ok"]
        assert len(ok) == 2
        t1, t5 = [r["val_top1"] for r in ok], [r["val_top5"] for r in ok]
        means[step] = statistics.mean(t1)
        row = rows[step]
        assert row[col["top-1 (%)"]] == f"{statistics.mean(t1):.2f} ± {statistics.stdev(t1):.2f}"
        assert row[col["top-5 (%)"]] == f"{statistics.mean(t5):.2f} ± {statistics.stdev(t5):.2f}"
        assert row[col["n"]] == "2"
        assert row[col["img/s"]] == f"{statistics.mean(r['images_per_sec'] for r in ok):,.0f}"
        assert row[col["params"]] != "—" and row[col["MACs"]] != "—"
    d = means["+ label smoothing"] - means["baseline"]
    by = lambda step: {r["seed"]: r["val_top1"] for r in recs if r["step"] == step and r["status"] == "ok"}  # noqa: E731
    diffs = [by("+ label smoothing")[s] - by("baseline")[s] for s in (0, 1)]
    half = 12.7062 * statistics.stdev(diffs) / 2 ** 0.5   # t(0.975, 1) · sd / sqrt(2), paired over seeds 0, 1
    lo, hi = statistics.mean(diffs) - half, statistics.mean(diffs) + half
    bold = "**" if lo > 0 or hi < 0 else ""
    want = f"{bold}{d:+.2f}{bold} [{lo:+.2f}, {hi:+.2f}]"
    assert rows["+ label smoothing"][col["Δ prev [95 % CI]"]] == want
    assert rows["+ label smoothing"][col["Δ base [95 % CI]"]] == want
    assert rows["+ label smoothing"][col["paper top-1 (Δ prev)"]] == "76.50 (r) (+1.50)"
    reading = "within noise" if not bold else ("agrees with the paper" if d > 0 else "opposite and significant")
    assert rows["+ label smoothing"][col["vs paper"]] == reading
    assert "(r): the paper's value as recalled" in md and f"- {reading}: + label smoothing" in md
    assert rows["+ diverge"][col["top-1 (%)"]] == "—" and rows["+ diverge"][col["n"]] == "0 (+2 failed)"
    data = json.loads(Path(paths["json"]).read_text())["sweeps"][0]["rows"]
    assert data[1]["top1_mean"] == pytest.approx(means["+ label smoothing"])
    assert data[1]["delta_base"] == pytest.approx(d)
    assert data[1]["ci95_prev"]["low"] == pytest.approx(lo, abs=1e-4) and data[1]["ci95_prev"]["paired"]


def test_failed_cells_are_listed_with_their_reason(report):
    _, md = report
    failed = md.split("Failed cells (2", 1)[1]
    assert "`02-diverge/seed0`: error: NonFiniteLoss" in failed and "`02-diverge/seed1`" in failed


def test_figures_are_nonempty_pngs_and_html_is_self_contained(tiny_sweep, report):
    paths, md = report
    names = sorted(Path(p).name for p in paths["figures"])
    assert names == sorted(f"tiny-ladder-{k}.png" for k in ("lr", "val-top1", "delta", "logit-gap", "confusion"))
    for p in paths["figures"]:
        assert Path(p).parent == tiny_sweep / "figures"
        _png_ok(p)
        assert f"](figures/{Path(p).name})" in md
    html = Path(paths["html"]).read_text()
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(blobs) == 5 and all(base64.b64decode(b)[:8] == PNG for b in blobs)
    assert 'src="figures/' not in html and "<table>" in html and "How to reproduce" in html


def test_lr_figure_data_is_per_iteration_from_the_recipe(tiny_sweep):
    from bagoftricks.report.figures import _lr_points
    from bagoftricks.report.sweep import load_sweep
    sweep = load_sweep(tiny_sweep)
    x, y = _lr_points(sweep.rows[1].ok[0])  # cosine: 2 epochs x 2 steps
    assert x == [0.0, 0.5, 1.0, 1.5] and y[0] == pytest.approx(0.1) and y[-1] == pytest.approx(0.0)
    x, y = _lr_points(sweep.rows[0].ok[0])  # step schedule, milestones beyond 2 epochs
    assert y == [pytest.approx(0.1)] * 4


def test_logit_gap_and_confusion_helpers():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 2, 2])
    assert logit_gaps(logits, labels).tolist() == [1.0, -4.0, 4.0]
    assert confusion_matrix(logits, labels, 3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]


def test_docs_page_with_pending_cells_and_two_sweeps(tmp_path, tiny_sweep):
    other = tmp_path / "grid"
    build_sweep(other, {"name": "tiny grid", "base": TINY_BASE, "seeds": [0, 1],
                        "grid": [{"name": "A", "set": {"model.variant": "A"}}]}, skip=("00-a/seed1",))
    page = tmp_path / "docs" / "results" / "tiny.md"
    code = main(["report", str(tiny_sweep), str(other), "--out", str(page), "--title", "Tiny results",
                 "--no-predict", "--no-html"])
    assert code == 0
    md = page.read_text()
    assert md.startswith("# Tiny results\n") and "## tiny ladder" in md and "## tiny grid" in md
    assert _table_rows(md.split("## tiny grid")[1])["A"][-1] == "1 (+1 pending)"
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        _png_ok(page.parent / link)
    assert not page.with_suffix(".html").exists()
    repro = md.split("## How to reproduce", 1)[1]
    assert "bagoftricks ablate spec.yaml --out" in repro and "bagoftricks report" in repro


def test_report_of_a_folder_that_is_no_sweep_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not an ablation folder" in capsys.readouterr().err


def test_cells_of_an_earlier_run_with_more_seeds_still_count(tmp_path, tiny_sweep):
    from bagoftricks.report.sweep import load_sweep
    plan = json.loads((tiny_sweep / "cells.json").read_text())
    plan["cells"] = [c for c in plan["cells"] if c["seed"] == 0]  # e.g. a later `ablate --seeds 1`
    (tmp_path / "cells.json").write_text(json.dumps(plan))
    (tmp_path / "results.jsonl").write_text((tiny_sweep / "results.jsonl").read_text())
    sweep = load_sweep(tmp_path)
    assert [r.n for r in sweep.rows] == [2, 2, 0] and len(sweep.rows[2].failed) == 2


def test_reproduce_names_the_steps_that_ran_whatever_the_last_only_was(tmp_path):
    from bagoftricks.report.page import _ablate_argv
    from bagoftricks.report.sweep import load_sweep
    out = tmp_path / "sweep"
    build_sweep(out, skip=("01-label-smoothing/seed0", "01-label-smoothing/seed1"))
    plan = json.loads((out / "cells.json").read_text())
    plan["argv"] += ["--only", "2"]  # the folder's last command ran only step 2
    (out / "cells.json").write_text(json.dumps(plan))
    argv = _ablate_argv(load_sweep(out))
    assert argv[:3] == ["bagoftricks", "ablate", "spec.yaml"] and argv.count("--only") == 1
    assert argv[-2:] == ["--only", "0,2"]  # step 1 has no results: not part of the page


def test_reproduce_of_a_sweep_completed_in_parts_has_no_only(tmp_path, tiny_sweep):
    from bagoftricks.report.sweep import load_sweep
    plan = json.loads((tiny_sweep / "cells.json").read_text())
    plan["argv"] += ["--only", "2"]  # finished by a last command that ran step 2 only
    (tmp_path / "cells.json").write_text(json.dumps(plan))
    (tmp_path / "results.jsonl").write_text((tiny_sweep / "results.jsonl").read_text())
    assert _argv_str(load_sweep(tmp_path)) == " ".join(plan["argv"][:-2])


def _argv_str(sweep) -> str:
    from bagoftricks.report.page import _ablate_argv
    return " ".join(_ablate_argv(sweep))


def test_ablate_records_only_in_its_command():
    import argparse
    from bagoftricks.ablate.cli import _argv, add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["s.yaml", "--out", "o", "--only", "0,1", "--only", "3"])
    assert _argv(args)[-2:] == ["--only", "0,1,3"]
    assert "--only" not in _argv(p.parse_args(["s.yaml", "--out", "o"]))


def test_table_shows_tta_top1_and_run_seconds_from_the_run_folders(tmp_path, tiny_sweep):
    from bagoftricks.report.blocks import table_block
    from bagoftricks.report.sweep import load_sweep
    out = tmp_path / "tta"
    build_sweep(out, {"name": "tta", "base": TINY_BASE, "seeds": [0],
                      "ladder": [{"name": "plain"}, {"name": "+ flip TTA", "set": {"tricks.tta": "flip"}}]})
    final = json.loads((out / "runs" / "01-flip-tta" / "seed0" / "final.json").read_text())
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert lines[1]["val_tta_top1"] == final["val_tta_top1"] and "val_tta_top1" not in lines[0]
    (out / "results.jsonl").write_text("")  # a results line without them: read from final.json
    _, headers, rows, _ = table_block(load_sweep(out))
    col = {h: i for i, h in enumerate(headers)}
    assert rows[0][col["TTA top-1 (%)"]] == "—"
    assert rows[1][col["TTA top-1 (%)"]] == f"{final['val_tta_top1']:.2f}"
    assert rows[1][col["run s"]] == f"{final['wall_seconds']:.0f}"
    _, headers, _, _ = table_block(load_sweep(tiny_sweep))
    assert "TTA top-1 (%)" not in headers and "run s" in headers


def test_environment_line_names_each_sweeps_threads_when_they_differ(tmp_path, tiny_sweep):
    import shutil

    from bagoftricks.report.page import _env_line
    from bagoftricks.report.sweep import load_sweep
    folders = []
    for name, threads in (("a", 2), ("b", 1)):
        d = tmp_path / name
        shutil.copytree(tiny_sweep, d)
        for env in d.glob("runs/*/*/env.json"):
            env.write_text(json.dumps(dict(json.loads(env.read_text()), torch_threads=threads)))
        folders.append(d)
    a, b = (load_sweep(d) for d in folders)
    assert "2 torch thread(s) per cell" in _env_line([a, a])
    assert f"torch threads per cell: {a.name} 2, {b.name} 1)." in _env_line([a, b])


def test_a_second_page_of_a_sweep_never_overwrites_the_figures_of_the_first(tmp_path, tiny_sweep, capsys):
    """Figures are named after the sweep: a second page of it in the same folder is refused (exit 2, the
    other page named, nothing written); the same page may be regenerated, and another folder is fine."""
    docs = tmp_path / "docs"
    first = docs / "first.md"
    assert main(["report", str(tiny_sweep), "--out", str(first), "--no-predict", "--no-html"]) == 0
    figs = {p: p.read_bytes() for p in (docs / "figures").glob("*.png")}
    assert figs
    assert main(["report", str(tiny_sweep), "--out", str(docs / "second.md"), "--no-predict", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "first.md" in err and "tiny-ladder" in err and "another folder" in err
    assert not (docs / "second.md").exists() and not (docs / "second.json").exists()
    assert {p: p.read_bytes() for p in (docs / "figures").glob("*.png")} == figs
    assert main(["report", str(tiny_sweep), "--out", str(first), "--no-predict", "--no-html"]) == 0
    assert main(["report", str(tiny_sweep), "--out", str(docs / "other" / "second.md"), "--no-predict",
                 "--no-html"]) == 0


def test_a_page_of_another_sweep_whose_name_starts_alike_is_no_conflict(tmp_path, tiny_sweep):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "longer.md").write_text("![x](figures/tiny-ladder-extra-lr.png)\n")  # sweep 'tiny ladder extra'
    assert main(["report", str(tiny_sweep), "--out", str(docs / "page.md"), "--no-predict", "--no-html"]) == 0


def _hand_sweep(tmp_path: Path, top1: dict[str, list[float]], paper: dict[str, float]):
    """A summarised ladder whose cells hold only final.json: {row name: top-1 of seeds 0, 1, ...}."""
    from bagoftricks.report.sweep import CellData, Row, Sweep, summarise
    rows = []
    for i, (name, values) in enumerate(top1.items()):
        cells = []
        for seed, v in enumerate(values):
            d = tmp_path / f"{i:02d}" / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "final.json").write_text(json.dumps({"val_top1": v, "val_top5": 99.0}))
            cells.append(CellData(f"{i:02d}/seed{seed}", name, i, seed, d, None))
        rows.append(Row(i, name, f"{i:02d}", {"top1": paper[name]}, "", cells))
    sweep = Sweep(tmp_path, "hand", "", "ladder", {}, rows, None)
    summarise(sweep)
    return sweep


@pytest.mark.parametrize("seeds", [3, 1])
def test_a_delta_the_same_for_every_seed_is_not_read_as_significant(tmp_path, seeds):
    """Every seed +0.40 (or one seed): no interval can be estimated from the seeds, so the table shows
    "n/a", no bold, and the row reads "not estimable" against the paper, not "agrees"/"opposite"."""
    from bagoftricks.report.blocks import paper_note, table_block
    sweep = _hand_sweep(tmp_path, {"baseline": [76.9, 77.7, 76.5][:seeds], "+ trick": [77.3, 78.1, 76.9][:seeds],
                                   "+ other": [77.0, 79.0, 77.5][:seeds]},
                        {"baseline": 75.0, "+ trick": 76.0, "+ other": 75.0})
    _, headers, rows, _ = table_block(sweep)
    col = {h: i for i, h in enumerate(headers)}
    why = "no spread over 3 seeds" if seeds == 3 else "1 seed"
    assert rows[1][col["Δ prev [95 % CI]"]] == f"+0.40 [n/a: {why}]"
    assert rows[1][col["Δ base [95 % CI]"]] == f"+0.40 [n/a: {why}]"
    assert rows[1][col["vs paper"]] == "not estimable"
    if seeds == 3:  # a Δ that varies over the seeds keeps its interval
        assert "n/a" not in rows[2][col["Δ base [95 % CI]"]] and rows[2][col["vs paper"]] != "not estimable"
    text = " ".join(str(b[1]) for b in paper_note(sweep))
    assert "n/a: the seeds show no spread" in text and "not estimable: + trick" in text
