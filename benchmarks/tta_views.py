"""Which test-time views help trained models: the same checkpoints scored with flip and with flip plus shifts.

    python benchmarks/tta_views.py RUN [RUN ...] [--out FILE.json]

For each run folder (its newest checkpoint, its own evaluation framing, precision and batch size) every view's
logits over the test split are computed once and then combined: "plain", "flip", and for shifts of 1 and 2 px
(both views moved by (+s, +s) and (-s, -s)) each edge fill — "black" (the normalised 0 pixel, what zero-padded
training crops show), "mean" (0 after normalisation) or "mirror" (the image reflected at its edge) — with
airbench94's weights (the image and its mirror 1/4 each, each shift 1/8) or six equal ones: keys like
"shift1_black_airbench". "shift1_<the run's data.pad_mode fill>_airbench" is what `tricks.tta: flip_shift`
reports. Prints a line per run and the mean over runs; benchmarks/README.md, "Which test-time augmentation", has
the measured numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from bagoftricks import data as bdata
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import autocast, eval_batch_size
from bagoftricks.engine.inference import load_model
from bagoftricks.engine.setup import build_data
from bagoftricks.files import write_json

SHIFTS = (1, 2)


@torch.no_grad()
def view_scores(run: str, device: str = "cpu") -> dict[str, float]:
    """Top-1 (%) of the run's newest checkpoint under every combination of views (keys: see the module's doc)."""
    lm = load_model(run, device=device)
    r, dev = lm.recipe, lm.device
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    fills = {"black": tricks.tta_border("zeros", lm.transform.mean, lm.transform.std), "mean": 0.0,
             "mirror": "reflect"}
    logits: dict[str, list[torch.Tensor]] = {}
    labels = []
    for x, y in bdata.eval_batches(data.test, eval_batch_size(r), data.eval_transform, dev, workers=r.data.workers):
        labels.append(y)
        views = {"id": x, "mirror": x.flip(-1)}
        for s in SHIFTS:
            for name, border in fills.items():
                for d in (s, -s):
                    views[f"id{d:+d}{name}"] = tricks.shift_view(x, d, d, border)
                    views[f"mirror{d:+d}{name}"] = tricks.shift_view(views["mirror"], d, d, border)
        with autocast(r.train.precision, dev):
            for k, v in views.items():
                logits.setdefault(k, []).append(lm.model(v).float())
    z = {k: torch.cat(v) for k, v in logits.items()}
    y = torch.cat(labels)

    def top1(t: torch.Tensor) -> float:
        return round(100.0 * (t.argmax(1) == y).float().mean().item(), 4)

    out = {"plain": top1(z["id"]), "flip": top1(tricks.tta_mean([z["id"], z["mirror"]], "flip"))}
    for s in SHIFTS:
        for name in fills:
            order = [z["id"], z["mirror"]] + [z[f"{b}{d:+d}{name}"] for d in (s, -s) for b in ("id", "mirror")]
            out[f"shift{s}_{name}_airbench"] = top1(tricks.tta_mean(order, "flip_shift"))
            out[f"shift{s}_{name}_equal"] = top1(torch.stack(order).mean(0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write {run: {key: top-1}, 'mean': {...}} as JSON")
    a = p.parse_args(argv)
    res = {}
    for run in a.runs:
        res[run] = view_scores(run, a.device)
        print(run, json.dumps(res[run]), flush=True)
    keys = res[a.runs[0]].keys()
    mean = {k: round(statistics.mean(v[k] for v in res.values()), 3) for k in keys}
    print("mean", json.dumps(mean))
    if a.out:
        write_json(a.out, {**res, "mean": mean})
    return 0


if __name__ == "__main__":
    sys.exit(main())
