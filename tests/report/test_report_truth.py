"""The report states what ran: rows and notes from the recipes the cells trained (extra `ablate --set`
overrides included), figures that show every row and say why one is missing, and an HTML page whose
tables and commands stay readable in an 800 px window."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from bagoftricks.report import make_report
from bagoftricks.report.figures import delta_figure, val_points_figure
from bagoftricks.report.render import CSS, to_html
from bagoftricks.report.sweep import Row, Sweep, load_sweep

from .conftest import TINY_BASE, build_sweep

SPEC = {
    "name": "short ladder",
    "description": "two steps, 2 epochs on all 64 images",
    "base": TINY_BASE,  # train.epochs: 2
    "set": {"data.train_limit": 0},
    "seeds": [0],
    "ladder": [{"name": "baseline"}, {"name": "+ cosine", "set": {"schedule.kind": "cosine"}}],
}
EXTRA = ("train.epochs=1", "data.train_limit=32")


@pytest.fixture(scope="module")
def short_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("truth") / "sweep"
    build_sweep(out, SPEC, extra=EXTRA)
    return out


def test_report_is_made_from_what_the_cells_ran(short_sweep):
    md = Path(make_report([short_sweep], echo=lambda s: None)["markdown"]).read_text()
    changes = md.split("What each row changes", 1)[1].split("\n\n", 2)[1]
    assert changes.splitlines() == ["- every row: `data.train_limit=32`, `train.epochs=1`",
                                    "- **baseline**: (none)",
                                    "- **+ cosine**: `schedule.kind=cosine`"]
    assert "Run with extra overrides for every cell (`ablate --set`): `train.epochs=1`, `data.train_limit=32`." in md
    note = next(p for p in md.split("\n\n") if p.startswith("**Note:**"))
    assert "the description above is the spec's" in note
    assert "`data.train_limit` 32 (spec: 0)" in note and "`train.epochs` 1 (spec: 2)" in note
    assert md.index("two steps, 2 epochs") < md.index("**Note:**")
    # no cell smooths its labels: Figure 4 says why it is missing instead of vanishing
    assert ("Figure 4 (the logit gap with and without label smoothing) is not drawn: no finished cell of this "
            "sweep uses label smoothing") in md
    assert "-logit-gap.png" not in md and "-confusion.png" in md


def test_a_sweep_that_ran_the_spec_has_no_note(tiny_sweep):
    md = Path(make_report([tiny_sweep], predict=False, html=False, echo=lambda s: None)["markdown"]).read_text()
    assert "**Note:**" not in md and "extra overrides" not in md
    assert "- **+ label smoothing**: `schedule.kind=cosine`, `tricks.label_smoothing=0.1`" in md
    assert "made with --no-predict" in md
    assert "steps (budget)" not in next(line for line in md.splitlines() if line.startswith("| # |"))  # no budget


def test_one_epoch_validation_figure_has_a_point_per_row(short_sweep):
    sweep = load_sweep(short_sweep)
    ax = val_points_figure(sweep).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "+ cosine"]
    assert ax.get_xlim() == pytest.approx((-0.6, 1.6))
    assert ax.get_ylabel() == "validation top-1 after epoch 1 (%)"  # every row evaluated epoch 1 only
    xs = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]  # one error-bar point per row
    assert xs == [0.0, 1.0]  # each row at its own place, even with equal numbers


def _row(i: int, name: str, **kw) -> Row:
    return Row(i, name, "", {}, "", [], **kw)


def test_delta_legend_swatches_have_the_colours_of_the_bars():
    rows = [_row(0, "base", top1=[90.0, 91.0]), _row(1, "+ a", d_base=-0.5), _row(2, "+ b", d_base=0.7),
            _row(3, "+ c", d_base=-0.2)]
    ax = delta_figure(Sweep(Path("."), "s", "", "ladder", {}, rows, None)).axes[0]
    bars = [to_rgba(p.get_facecolor()) for p in ax.patches]
    assert bars[0] == bars[2] != bars[1]
    swatches = {h.get_label(): to_rgba(h.get_facecolor()) for h in ax.get_legend().legend_handles}
    assert swatches == {"measured loss (mean over seeds)": bars[0], "measured gain (mean over seeds)": bars[1]}
    only_gain = delta_figure(Sweep(Path("."), "s", "", "ladder", {}, rows[:1] + rows[2:3], None)).axes[0]
    assert [h.get_label() for h in only_gain.get_legend().legend_handles] == ["measured gain (mean over seeds)"]


def _rule(selector: str) -> str:
    """The declarations of every top-level CSS rule whose selector list holds `selector`, joined."""
    found = [body for sel, body in re.findall(r"([^{}]+)\{([^{}]*)\}", CSS.replace("\n", "").split("@media")[0])
             if selector in [s.strip() for s in sel.split(",")]]
    assert found, f"no CSS rule for {selector}"
    return ";".join(found)


def test_html_tables_keep_numbers_on_one_line_and_commands_wrap():
    page = to_html([("table", ["#", "step", "top-1 (%)"], [["0", "a long step name", "91.23 ± 0.45"]],
                     ["r", "l", "r"]), ("code", "bagoftricks ablate " + "x" * 300)], "t")
    assert '<div class="wide"><table>' in page and "</table></div>" in page
    assert "overflow-x:auto" in _rule(".wide")           # a table wider than the window scrolls in its box
    assert "white-space:nowrap" in _rule("td")           # "91.23 ± 0.45" stays on one line
    assert "white-space:normal" in _rule("td.l")         # step names may wrap
    assert "white-space:pre-wrap" in _rule("pre") and "overflow-x" not in _rule("pre")  # commands are not cut
    assert "table{font-size:0.75em}" in CSS.replace("\n", "").split("@media (max-width:900px)")[1]  # 800 px


@pytest.mark.parametrize("route", ["spec", "ablate --set"])
def test_a_budgeted_sweep_is_reported_by_its_budget_not_the_steps_each_cell_chose(tmp_path, monkeypatch, route):
    # each cell's recipe.yaml records the steps its budget chose (here 18 and 9: the second row's steps cost
    # twice as much), the step schedule's milestones moved with them, and no budget; what a row changes is still
    # its own override, and every row the budget — given in the spec's set or by `ablate --set` (which the report
    # read as the steps and milestones of each row)
    from bagoftricks.engine import budget
    monkeypatch.setattr(budget, "time_job", lambda job, setup, window, agree: budget.Timing(
        step={16: 0.4 if job.recipe.optim.lr == 0.1 else 0.8}, evaluation=0.1, checkpoint=0.0, setup=0.0))
    monkeypatch.setattr(budget, "resize", lambda *args: None)  # the steps run at the faked timing's speed
    spec = {"name": "budget grid", "description": "two rows at equal time", "base": TINY_BASE, "seeds": [0],
            "set": {"train.eval_every": 100, **({"train.budget": "10s"} if route == "spec" else {})},
            "grid": [{"name": "base"}, {"name": "lr 0.2", "set": {"optim.lr": 0.2}}]}
    build_sweep(tmp_path / "sweep", spec, extra=("train.budget=10s",) if route != "spec" else ())
    ran = [load_sweep(tmp_path / "sweep").rows[i].cells[0].recipe for i in (0, 1)]
    steps = [r.train.steps for r in ran]
    assert steps[0] > steps[1] > 0 and ran[0].schedule.milestones != ran[1].schedule.milestones
    md = Path(make_report([tmp_path / "sweep"], predict=False, html=False, echo=lambda s: None)["markdown"]).read_text()
    changes = md.split("What each row changes", 1)[1].split("\n\n", 2)[1]
    assert changes.splitlines() == ["- every row: `train.budget=10s`, `train.eval_every=100`",
                                    "- **base**: (none)", "- **lr 0.2**: `optim.lr=0.2`"]
    assert "train.steps" not in md and "schedule.milestones" not in md
    if route == "spec":
        assert "**Note:**" not in md  # the cells ran what the spec asks
    else:  # what the spec's text does not know: the budget, not what it chose
        assert "these cells ran with other settings: `train.budget` 10s (spec: unset)." in md
    head = next(line for line in md.splitlines() if line.startswith("| # |"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| 0 |")
            or line.startswith("| 1 |")]
    at = cols.index("steps (budget)")
    assert [row[at] for row in rows] == [f"{n:,}" for n in steps]  # what each row's budget bought


def test_an_auto_precision_sweep_is_reported_as_auto_even_from_cells_that_did_not_record_it(tmp_path):
    # a cell records the precision auto chose (recipe.yaml) and that auto was asked (env.json "asked"); cells run
    # before "asked" existed, under a spec that now says auto, are read as auto too: no note, no change per row
    import json
    spec = {"name": "auto grid", "description": "precision auto", "base": TINY_BASE, "seeds": [0],
            "set": {"train.precision": "auto"},
            "grid": [{"name": "base"}, {"name": "lr 0.2", "set": {"optim.lr": 0.2}}]}
    build_sweep(tmp_path / "sweep", spec)
    for env in (tmp_path / "sweep" / "runs").glob("*/seed0/env.json"):
        rec = json.loads(env.read_text())
        assert rec.pop("asked") == {"train.precision": "auto"}
        env.write_text(json.dumps(rec))
    md = Path(make_report([tmp_path / "sweep"], predict=False, html=False, echo=lambda s: None)["markdown"]).read_text()
    changes = md.split("What each row changes", 1)[1].split("\n\n", 2)[1]
    assert changes.splitlines() == ["- every row: `train.precision=auto`", "- **base**: (none)",
                                    "- **lr 0.2**: `optim.lr=0.2`"]
    assert "**Note:**" not in md
