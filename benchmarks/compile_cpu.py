"""train.compile on a CPU: the recipe's training step eager and compiled, timed in turn in one process.

    python benchmarks/compile_cpu.py --recipe recipes/fmnist/all.yaml --modes none model step --windows 9

Builds one `Training` per `train.compile` mode from the same recipe and seed (the engine's own step:
autocast, channels-last, fused SGD, the bad-step guard), runs each mode's warm-up (the compiled ones compile
there; the seconds are reported), then takes the modes' timed windows in turn (a b c a b c ...): this
machine's speed swings by up to 2x over seconds, and interleaving makes every mode see the same swings.
Prints img/s per mode (median of the windows), the ratio to the first mode, window by window, and the
compile seconds; with --out, writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bagoftricks import bench
from bagoftricks import recipe as brecipe
from bagoftricks.engine import derive
from bagoftricks.engine import distributed as bdist
from bagoftricks.files import atomic_write_text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--modes", nargs="+", default=["none", "model"], choices=["none", "model", "step"])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--windows", type=int, default=9)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    base = brecipe.load(brecipe.resolve_recipe_path(a.recipe), a.set)
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    device = derive.resolve_device(base.train.device, 0)
    steps, compile_s = [], []
    for mode in a.modes:
        r = brecipe.apply_overrides(base, [f"train.compile={mode}"])
        _, fn, _ = bench.training_step(r, device, bdist.DistInfo())
        t0 = time.perf_counter()
        for _ in range(a.warmup):
            fn()
        compile_s.append(time.perf_counter() - t0)
        steps.append(fn)
    timings = bench._interleaved(steps, device, 0, a.windows, a.steps)
    batch = base.train.batch_size
    img_s = [batch / t.median for t in timings]
    ratios = [[t0 / t1 for t0, t1 in zip(timings[0].runs, t.runs)] for t in timings]
    print(f"{a.recipe} {' '.join(a.set)}: batch {batch}, {torch.get_num_threads()} threads, "
          f"{a.windows} windows of {a.steps} steps, modes in turn")
    for mode, ips, rs, cs in zip(a.modes, img_s, ratios, compile_s):
        print(f"  compile={mode:<6} {ips:8.0f} img/s  x{ips / img_s[0]:.2f} of {a.modes[0]}  "
              f"(windows: {' '.join(f'{x:.2f}' for x in rs)}; median {statistics.median(rs):.2f})  "
              f"warm-up {cs:.1f} s")
    if a.out:
        atomic_write_text(a.out, json.dumps({"recipe": a.recipe, "set": a.set, "modes": a.modes, "img_s": img_s,
                                             "window_ratios": ratios, "warmup_s": compile_s}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
