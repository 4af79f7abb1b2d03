"""Draws docs/results/figures/optimizers-batch.png: test top-1 against the global batch for SGD (linear scaling +
warmup), LARS and LAMB at the same epochs (mean and every seed of the batch sweep), and beside it the held-out
top-1 of each rate tried for LARS and LAMB at batch 4,096 (the tuning sweep).

    PYTHONPATH=src python docs/results/optimizers_batch_figure.py \
        --sweep runs/ablate/optimizers-batch --tune runs/ablate/optimizers-batch-tune
"""
import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

COLOURS = {"sgd": "tab:blue", "lars": "tab:orange", "lamb": "tab:green"}


def cells(sweep: str) -> list[dict]:
    """The finished cells of a sweep, each with its optimizer, global batch and lr read from its overrides."""
    out = []
    for line in (Path(sweep) / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("status") != "ok":
            continue
        sets = dict(o.split("=", 1) for o in row["overrides"])
        row["optimizer"] = sets.get("optim.name", "sgd")
        row["batch"] = int(sets.get("train.batch_size", 128))
        row["lr"] = float(sets.get("optim.lr", "nan"))
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", required=True, help="the batch sweep's folder (optimizers-batch.yaml)")
    ap.add_argument("--tune", required=True, help="the lr sweep's folder (optimizers-batch-tune.yaml)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures" / "optimizers-batch.png"))
    a = ap.parse_args()
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)

    runs = defaultdict(list)
    for c in cells(a.sweep):
        runs[c["optimizer"], c["batch"]].append(c["val_top1"])
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
    for c in cells(a.tune):
        tuned[c["optimizer"]].append((c["lr"], c["val_top1"]))
    for name, points in sorted(tuned.items()):
        points.sort()
        right.plot([p[0] for p in points], [p[1] for p in points], "o-", color=COLOURS.get(name, "black"),
                   label=name.upper())
    right.set_xscale("log")
    right.set_xlabel("optim.lr per 256 images (x16 at batch 4,096)")
    right.set_ylabel("held-out top-1 (%), seed 100")
    right.set_title("The rate of each at batch 4,096")
    right.legend(fontsize=8)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(a.out)


if __name__ == "__main__":
    main()
