"""Wall time of quick commands (`--help`, `--version`, `show`, `CMD --help`) as fresh processes.

    python benchmarks/cli_startup.py --runs 9                       # this checkout's src/
    python benchmarks/cli_startup.py --src before=../old/src --src after=src

Each command runs `--runs` times, in turn with the other commands and the other source trees (so
that a burst of load on a shared machine hits every measurement alike); the table gives the median
and the range in seconds, next to the interpreter's own start and `import torch` for scale.
Results: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "bagoftricks --help": ["-m", "bagoftricks", "--help"],
    "bagoftricks --version": ["-m", "bagoftricks", "--version"],
    "bagoftricks show": ["-m", "bagoftricks", "show"],
    "bagoftricks show --recipe recipes/fmnist/all.yaml": ["-m", "bagoftricks", "show", "--recipe",
                                                          "recipes/fmnist/all.yaml"],
    "bagoftricks train --help": ["-m", "bagoftricks", "train", "--help"],
    "bagoftricks ablate --help": ["-m", "bagoftricks", "ablate", "--help"],
    "bagoftricks report --help": ["-m", "bagoftricks", "report", "--help"],
}
BASELINES = ("python -c pass", "python -c 'import torch'")  # the same for every source tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="runs of each command")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                    help="a source tree to time (repeatable; default: this checkout's src/)")
    args = ap.parse_args()
    trees = dict(s.split("=", 1) for s in args.src) or {"src": str(Path(__file__).resolve().parents[1] / "src")}
    jobs = [(name, tree) for name in COMMANDS for tree in (list(trees)[:1] if name in BASELINES else trees)]
    times: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    for _ in range(args.runs):
        for name, tree in jobs:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(trees[tree])}
            t = time.perf_counter()
            subprocess.run([sys.executable, *COMMANDS[name]], check=True, stdout=subprocess.DEVNULL, env=env)
            times[name, tree].append(time.perf_counter() - t)
    print("| command | source | median (s) | min-max (s) |\n|---|---|---:|---:|")
    for (name, tree), ts in times.items():
        shown = "—" if name in BASELINES else tree
        print(f"| `{name}` | {shown} | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} |")


if __name__ == "__main__":
    main()
