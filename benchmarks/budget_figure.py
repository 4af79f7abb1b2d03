"""A picture of budgeted runs: how their length followed the machine, and the lr schedule that came of it.

    python benchmarks/budget_figure.py runs/ask/hog-once-1 runs/ask/hog-four-1 --out docs/results/figures/budget.png \
        --mark 85 "a busy core from 85 s"

For each run folder of a `train.budget` run (env.json's "budget", recipe.yaml, final.json): left, the planned length
in steps against the budget's seconds — the start's choice, then each re-size at the second it was made, to the run's
end (final.json's `budget_spent`, or its wall time); right, the lr along the run as it took it (against
epochs, as `report` draws it: `report.figures._lr_points`, the world size's lr scaling included), from its
recorded recipe (`train.resized_at` / `train.resized_from`: the schedule's rest stretched or squeezed at each re-size,
continuous through it). The budget is the dashed line. The lr is this version's reading of the recipe: a folder
trained before a re-size within the warmup kept the warmup (commit d7795b0) is drawn as it would rerun now.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bagoftricks.files import read_json_object
from bagoftricks.report.figures import _lr_points
from bagoftricks.report.sweep import CellData


def read_run(folder: Path) -> dict:
    """What the figure needs of one budgeted run folder."""
    env = read_json_object(folder / "env.json")
    if "budget" not in env:
        raise SystemExit(f"{folder}: env.json has no \"budget\": not a run sized by train.budget")
    final = read_json_object(folder / "final.json")  # {} while the run goes on
    b = env["budget"]
    seconds = [b["spent_before_run"]] + [x["elapsed"] for x in b.get("resized", [])]
    steps = [b["steps"]] + [x["steps"] for x in b.get("resized", [])]
    end = final.get("budget_spent", final.get("wall_seconds", seconds[-1]))
    epochs, lr = _lr_points(CellData(folder.name, "", None, 0, folder, None))  # as `report` draws a run's lr
    return {"name": folder.name, "budget": b["budget_seconds"], "seconds": seconds, "steps": steps, "end": end,
            "epochs": epochs, "lr": lr, "top1": final.get("val_top1")}


def draw(runs: list[dict], out: Path, mark: tuple[float, str] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        label = run["name"] + (f" ({run['top1']:.2f} %)" if run["top1"] is not None else "")
        xs, ys = run["seconds"] + [run["end"]], run["steps"] + [run["steps"][-1]]
        line, = left.step(xs, ys, where="post", label=label)
        left.plot(run["end"], ys[-1], "o", color=line.get_color())
        right.plot(run["epochs"], run["lr"], color=line.get_color(), label=label)
    left.axvline(runs[0]["budget"], color="k", ls="--", lw=1, label=f"budget {runs[0]['budget']:.0f} s")
    if mark is not None:
        left.axvline(mark[0], color="grey", ls=":", lw=1, label=mark[1])
    left.set(xlabel="seconds of the budget", ylabel="planned length (steps)",
             title="length: the start's choice, then each re-size; dot: the run's end")
    right.set(xlabel="epoch", ylabel="lr", title="the lr of each step (recipe.yaml as recorded)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of train.budget runs")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--mark", nargs=2, metavar=("SECONDS", "LABEL"), help="a dotted line at SECONDS, labelled")
    a = ap.parse_args(argv)
    draw([read_run(f) for f in a.runs], a.out, (float(a.mark[0]), a.mark[1]) if a.mark else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
