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
import sys
from pathlib import Path

from bagoftricks import recipe as brecipe
from bagoftricks.files import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import in_turn  # noqa: E402  (the variants' timing in turn; here each variant is one train.compile mode)


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
    res = in_turn.time_in_turn(base, [[f"train.compile={m}"] for m in a.modes], a.warmup, a.windows, a.steps)
    print(in_turn.report(f"{a.recipe} {' '.join(a.set)}: batch {base.train.batch_size}, {res['threads']} threads, "
                         f"{a.windows} windows of {a.steps} steps, modes in turn", [f"compile={m}" for m in a.modes],
                         res))
    if a.out:
        atomic_write_text(a.out, json.dumps({"recipe": a.recipe, "set": a.set, "modes": a.modes, **res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
