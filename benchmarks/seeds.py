"""Train a recipe over several seeds and print a markdown row: mean ± std test top-1 and wall time.

    python benchmarks/seeds.py recipes/fmnist/all.yaml --seeds 0 1 2 [--set k=v ...] [--out runs/bench]

Each seed is an ordinary run folder (runs/bench/<recipe>-s<seed>); finished ones are reused, so the
command can be re-run to add seeds. Wall time is the process's own, data loading included.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    name = Path(a.recipe).stem + (f"-{a.tag}" if a.tag else "")
    rows = []
    for seed in a.seeds:
        out = Path(a.out) / f"{name}-s{seed}"
        if not (out / "final.json").is_file():
            cmd = [sys.executable, "-m", "bagoftricks", "train", "--recipe", a.recipe, "--no-progress",
                   "--set", f"train.seed={seed}", "--out", str(out)]
            for o in a.overrides:
                cmd += ["--set", o]
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t
            (out / "bench_wall.json").write_text(json.dumps({"process_wall_seconds": wall}))
        final = json.loads((out / "final.json").read_text())
        wall_file = out / "bench_wall.json"
        wall = (json.loads(wall_file.read_text())["process_wall_seconds"] if wall_file.is_file()
                else final["wall_seconds"])
        rows.append((seed, final["val_top1"], wall))
        print(f"seed {seed}: top-1 {final['val_top1']:.2f} %, {wall:.0f} s", flush=True)
    tops = [r[1] for r in rows]
    walls = [r[2] for r in rows]
    sd = statistics.stdev(tops) if len(tops) > 1 else 0.0
    print(f"| {name} | {len(rows)} | {statistics.mean(tops):.2f} ± {sd:.2f} | {min(tops):.2f}–{max(tops):.2f} "
          f"| {statistics.median(walls):.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
