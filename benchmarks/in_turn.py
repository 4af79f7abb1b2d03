"""A recipe's training step under several sets of overrides, timed in turn in one process.

    python benchmarks/in_turn.py --recipe recipes/fmnist/fast-10min.yaml \
        --variant train.small_convs=matmul --variant train.small_convs=native --windows 15

Builds one `Training` per variant from the same recipe and seed (the engine's own step: autocast,
channels-last, fused SGD, the bad-step guard, epoch 0's image size), runs each variant's warm-up, then
takes the variants' timed windows in turn (a b c a b c ...): this machine's speed swings by up to 2x over
seconds, and interleaving makes every variant see the same swings. A variant is one or more KEY=VALUE
overrides joined by commas (a comma inside a value, as in `data.progressive_sizes=[20, 24]`, stays in it);
the first variant is the yardstick. Prints img/s per variant (median of the
windows), the ratio to the first, window by window, and the warm-up seconds; with --out, writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import torch

from bagoftricks import bench
from bagoftricks import recipe as brecipe
from bagoftricks.engine import derive
from bagoftricks.engine import distributed as bdist
from bagoftricks.files import atomic_write_text


def time_in_turn(base: brecipe.Recipe, variants: list[list[str]], warmup: int, windows: int,
                 steps: int) -> dict:
    """img/s of each variant's step (median of its windows, at the variant's own batch size), each window's img/s
    over the first variant's window taken beside it, and the seconds of each warm-up (a compiled variant compiles
    there)."""
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    device = derive.resolve_device(base.train.device, 0)
    fns, warm_s, batches = [], [], []
    for overrides in variants:
        r = brecipe.apply_overrides(base, overrides)
        batches.append(r.train.batch_size)  # a variant may change it: img/s and ratios are per image
        _, fn, _ = bench.training_step(r, device, bdist.DistInfo())
        t0 = time.perf_counter()
        for _ in range(warmup):
            fn()
        warm_s.append(time.perf_counter() - t0)
        fns.append(fn)
    timings = bench._interleaved(fns, device, 0, windows, steps)
    return {"threads": torch.get_num_threads(), "img_s": [bs / t.median for bs, t in zip(batches, timings)],
            "window_ratios": [[(bs / b) / (batches[0] / a) for a, b in zip(timings[0].runs, t.runs)]
                              for bs, t in zip(batches, timings)],
            "warmup_s": warm_s}


def split_variant(text: str) -> list[str]:
    """"a.b=1,c.d=[2, 3]" -> ["a.b=1", "c.d=[2, 3]"]: a comma starts a new override only before KEY=."""
    return [o.strip() for o in re.split(r",(?=\s*[A-Za-z_][\w]*\.[\w.]+=)", text) if o.strip()]


def report(title: str, names: list[str], res: dict) -> str:
    first = res["img_s"][0]
    lines = [title]
    for name, ips, rs, ws in zip(names, res["img_s"], res["window_ratios"], res["warmup_s"]):
        lines.append(f"  {name:<28} {ips:8.0f} img/s  x{ips / first:.2f} of {names[0]}  "
                     f"(windows: {' '.join(f'{x:.2f}' for x in rs)}; median {statistics.median(rs):.2f})  "
                     f"warm-up {ws:.1f} s")
    return "\n".join(lines)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The arguments every in-turn timing takes (this script's, compile_cpu.py's)."""
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--windows", type=int, default=9)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="")


def run(a: argparse.Namespace, names: list[str], variants: list[list[str]], kind: str, record: dict) -> int:
    """Time `variants` of a.recipe in turn, print them under `names`, and write them (with `record`) to a.out."""
    base = brecipe.load(brecipe.resolve_recipe_path(a.recipe), a.set)
    res = time_in_turn(base, variants, a.warmup, a.windows, a.steps)
    print(report(f"{a.recipe} {' '.join(a.set)}: batch {base.train.batch_size}, {res['threads']} threads, "
                 f"{a.windows} windows of {a.steps} steps, {kind} in turn", names, res))
    if a.out:
        atomic_write_text(a.out, json.dumps({"recipe": a.recipe, "set": a.set, **record, **res}, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--variant", action="append", required=True, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="one variant's overrides (repeat; the first is the yardstick)")
    a = p.parse_args(argv)
    return run(a, a.variant, [split_variant(v) for v in a.variant], "variants", {"variants": a.variant})


if __name__ == "__main__":
    raise SystemExit(main())
