"""`bagoftricks transfer`: options checked, the run trained (or continued), predictions drawn on request."""
from __future__ import annotations

import argparse
from pathlib import Path

from bagoftricks.errors import UsageError

EXIT_OK = 0


def _check(args: argparse.Namespace) -> None:
    if args.resume and (args.recipe or args.overrides or args.task):
        raise UsageError("--resume continues a transfer run with the recipe saved in its folder; drop "
                         "--task/--recipe/--set")
    if args.resume and args.out:
        raise UsageError("--resume continues the run in its own folder; drop --out")
    if not args.resume and not (args.out and (args.task or args.recipe)):
        raise UsageError("transfer: --out DIR and the task are required: --task detect|segment, or a --recipe whose "
                         "transfer.task says it (or --resume RUN)")
    if args.draw < 0:
        raise UsageError(f"--draw: expected a number of test images >= 0, got {args.draw}")


def cmd_transfer(args: argparse.Namespace) -> int:
    from bagoftricks import recipe
    from bagoftricks.transfer.loop import run_transfer
    _check(args)
    progress = False if args.no_progress else None
    if args.resume:
        out = Path(args.resume)
        if not (out / "recipe.yaml").is_file():
            raise UsageError(f"--resume: {out} is not a run folder (no recipe.yaml)")
        final = run_transfer(recipe.load(out / "recipe.yaml"), out, resume=True, progress=progress)
    else:
        out = Path(args.out)
        r = recipe.load(args.recipe, [*args.overrides, *([f"transfer.task={args.task}"] if args.task else [])])
        final = run_transfer(r, out, progress=progress)
    scores = "  ".join(f"{k} {final[k]:.2f}" for k in ("map_50", "map", "miou", "pixel_acc") if k in final)
    print(f"{scores}  ({final.get('wall_seconds', 0):.0f} s)")
    if args.draw:
        from bagoftricks.transfer.predict import draw_run
        for path in draw_run(out, args.draw):
            print(path)
    print(f"run folder: {out}")
    return EXIT_OK
