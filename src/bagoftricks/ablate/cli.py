"""The `bagoftricks ablate` command line: its options (add_arguments), the command (cmd_ablate) and
`python -m bagoftricks.ablate` (main)."""
from __future__ import annotations

import argparse

from bagoftricks.ablate.launchers import LAUNCHERS
from bagoftricks.ablate.spec import load_spec
from bagoftricks.ablate.sweep import run_sweep
from bagoftricks.errors import SpecError


def _argv(args: argparse.Namespace) -> list[str]:
    """The command as given, for cells.json and the report's "how to reproduce"."""
    argv = ["bagoftricks", "ablate", args.spec, "--out", args.out, "--jobs", str(args.jobs)]
    argv += ["--seeds", str(args.seeds)] if args.seeds is not None else []
    for o in args.overrides:
        argv += ["--set", o]
    argv += ["--only", ",".join(args.only)] if args.only else []
    if args.launcher != "local":
        argv += ["--launcher", args.launcher]
    argv += ["--address", args.address] if args.address is not None else []
    argv += ["--allow-unchanged"] if args.allow_unchanged else []
    return argv


def cmd_ablate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    seeds = tuple(range(args.seeds)) if args.seeds is not None else None
    if args.seeds is not None and args.seeds < 1:
        raise SpecError(f"--seeds: must be >= 1, got {args.seeds}")
    return run_sweep(spec, args.out, jobs=args.jobs, seeds=seeds, extra=tuple(args.overrides), dry_run=args.dry_run,
                     retry_failed=args.retry_failed, only=args.only, argv=_argv(args),
                     echo=lambda s: print(s, flush=True), launcher=args.launcher, address=args.address,
                     allow_unchanged=args.allow_unchanged)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `bagoftricks ablate` (this module imports no torch: the command line builds its
    parser from here)."""
    p.description = ("Run every cell (step x seed) of an ablation spec as its own run folder under OUT/runs/, "
                     "appending each cell's final numbers to OUT/results.jsonl. Re-running skips finished cells, "
                     "resumes partial ones and keeps failed ones (see --retry-failed). Exit 1 if any cell failed.")
    p.add_argument("spec", help="ablation spec (YAML: base, set, seeds, ladder | grid, teacher)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (created; re-use it to continue)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells at once; each gets max(1, cores // N) threads, and one GPU when there are GPUs "
                        "(--launcher ray: cells per CPU-only machine)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="where cells run: local subprocesses (default) or Ray tasks (pip install 'bagoftricks[ray]'); "
                        "DIR must then be a folder every node sees at the same path")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="--launcher ray: the cluster for ray.init(address=ADDR), e.g. auto or ray://host:10001 "
                        "(default: start or attach a local Ray instance)")
    p.add_argument("--seeds", type=int, default=None, metavar="K", help="use seeds 0..K-1 instead of the spec's")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="extra override for every cell, after the spec's (repeatable)")
    p.add_argument("--only", action="append", default=[], metavar="STEP",
                   help="run only this step (index, name or slug; repeatable or comma-separated)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and what would happen; run nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="start failed cells afresh (their old folder is kept as seed<k>.failed-<n>)")
    p.add_argument("--allow-unchanged", action="store_true",
                   help="run a step whose overrides leave the recipe of the row above (ladder) or of another row "
                        "(grid) as it was, with a warning; without it such a step is an error before anything runs")
