"""Draws docs/results/figures/optimizers-batch.png: test top-1 against the global batch for SGD (linear scaling +
warmup), LARS and LAMB at the same epochs (mean and every seed of the batch sweep), and beside it the held-out
top-1 of each rate tried for LARS and LAMB at batch 4,096 (the tuning sweep).

    PYTHONPATH=src python docs/results/optimizers_batch_figure.py \
        --sweep runs/ablate/optimizers-batch --tune runs/ablate/optimizers-batch-tune
"""
import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from bagoftricks.report.figures import save  # also selects the Agg canvas
from bagoftricks.report.sweep import load_sweep

COLOURS = {"sgd": "tab:blue", "lars": "tab:orange", "lamb": "tab:green"}


def rows(sweep: str) -> list[tuple[str, int, float, list[float]]]:
    """(optimizer, global batch, lr, final top-1 of each seed) of every measured row of a sweep, read from the
    recipe its cells ran."""
    out = []
    for row in load_sweep(sweep).rows:
        if row.by_seed:
            r = row.ok[0].recipe
            out.append((r.optim.name, r.train.batch_size, r.optim.lr, list(row.by_seed.values())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", required=True, help="the batch sweep's folder (optimizers-batch.yaml)")
    ap.add_argument("--tune", required=True, help="the lr sweep's folder (optimizers-batch-tune.yaml)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures" / "optimizers-batch.png"))
    a = ap.parse_args()
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)

    runs = {(name, batch): top1 for name, batch, _, top1 in rows(a.sweep)}
    sgd128 = runs.get(("sgd", 128))
    for name in COLOURS:
        points = sorted((b, v) for (o, b), v in runs.items() if o == name)
        if not points:
            continue
        for b, v in points:
            left.scatter([b] * len(v), v, s=12, alpha=0.4, color=COLOURS[name])
        left.plot([b for b, _ in points], [statistics.mean(v) for _, v in points], "o-", color=COLOURS[name],
                  label=name.upper() if name != "sgd" else "SGD + linear scaling")
    if sgd128:
        mean = statistics.mean(sgd128)
        left.axhline(mean - 1.0, color="grey", ls=":", lw=1, label="batch-128 SGD − 1 point")
    left.set_xscale("log", base=2)
    left.set_xlabel("global batch (5 epochs at every batch)")
    left.set_ylabel("test top-1 (%)")
    left.set_title("Same epochs, larger batches")
    left.legend(fontsize=8)

    tuned = defaultdict(list)
    for name, _, lr, top1 in rows(a.tune):
        tuned[name] += [(lr, v) for v in top1]
    for name, points in sorted(tuned.items()):
        points.sort()
        right.plot([p[0] for p in points], [p[1] for p in points], "o-", color=COLOURS.get(name, "black"),
                   label=name.upper())
    right.set_xscale("log")
    right.set_xlabel("optim.lr per 256 images (x16 at batch 4,096)")
    right.set_ylabel("held-out top-1 (%), seed 100")
    right.set_title("The rate of each at batch 4,096")
    right.legend(fontsize=8)
    print(save(fig, Path(a.out)))


if __name__ == "__main__":
    main()
