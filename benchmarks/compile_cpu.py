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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import in_turn  # noqa: E402  (the variants' timing in turn; here each variant is one train.compile mode)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    in_turn.add_common_args(p)
    p.add_argument("--modes", nargs="+", default=["none", "model"], choices=["none", "model", "step"])
    a = p.parse_args(argv)
    return in_turn.run(a, [f"compile={m}" for m in a.modes], [[f"train.compile={m}"] for m in a.modes], "modes",
                       {"modes": a.modes})


if __name__ == "__main__":
    raise SystemExit(main())
