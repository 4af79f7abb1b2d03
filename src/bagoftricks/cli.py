"""Command line: parse, call the library, print. Exit codes: 0 ok, 2 bad input, 1 other failure,
128+N when stopped by signal N (130 for SIGINT, 143 for SIGTERM) after writing a checkpoint."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from bagoftricks import __version__

from bagoftricks.errors import BadInput, TrainingInterrupted, UsageError, exit_code

EXIT_OK = 0


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", metavar="FILE", help="YAML recipe (default: the paper's §2 baseline)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a field, e.g. --set optim.lr=0.2 (repeatable)")


def cmd_show(args) -> int:
    from bagoftricks import recipe
    r = recipe.load(args.recipe, args.overrides)
    sys.stdout.write(recipe.dump(r))
    return EXIT_OK


def cmd_train(args) -> int:
    from bagoftricks import recipe
    from bagoftricks.engine import train
    if args.resume:
        if args.recipe or args.overrides:
            raise UsageError("--resume continues a run with the recipe saved in its folder; "
                             "drop --recipe/--set (or start a new run with --out)")
        out = Path(args.resume)
        if not (out / "recipe.yaml").is_file():
            raise UsageError(f"--resume: {out} is not a run folder (no recipe.yaml)")
        r = recipe.load(out / "recipe.yaml")
    else:
        if not args.out:
            raise UsageError("train: --out DIR is required (or --resume DIR)")
        out = Path(args.out)
        r = recipe.load(args.recipe, args.overrides)
    final = train(r, out, resume=bool(args.resume), progress=None if not args.no_progress else False)
    if int(os.environ.get("RANK", "0")) == 0:
        top1 = final.get("val_top1")
        if top1 is not None:
            print(f"test top-1 {top1:.2f} %  top-5 {final.get('val_top5', float('nan')):.2f} %  "
                  f"({final.get('wall_seconds', 0):.0f} s)")
        print(f"run folder: {out}")
    return EXIT_OK


def cmd_eval(args) -> int:
    from bagoftricks.engine.evaluate import evaluate_checkpoint
    res = evaluate_checkpoint(args.checkpoint, data_root=args.data, overrides=args.overrides, device=args.device,
                              use_ema=args.ema)
    print(json.dumps(res))
    return EXIT_OK


def cmd_flops(args) -> int:
    from bagoftricks import models
    try:
        size = args.image_size or models.default_image_size(args.model)
        m = models.build_model(args.model, args.num_classes, args.in_channels, variant=args.variant,
                               width=args.width, se_reduction=args.se_reduction, groups=args.groups,
                               width_per_group=args.width_per_group, width_mult=args.width_mult)
    except ValueError as e:
        raise UsageError(str(e)) from None
    params, macs = models.count_params_macs(m, (args.in_channels, size, size))
    name = args.model + (f"-{args.variant}" if args.model.startswith(("resnet", "resnext", "seres")) else "")
    if args.json:
        print(json.dumps({"model": args.model, "variant": args.variant, "image_size": size, "params": params,
                          "macs": macs}))
    else:
        print(f"{name} at {size}x{size} px: {params / 1e6:.3f} M parameters, {macs / 1e9:.3f} G multiply-accumulates")
    return EXIT_OK


def cmd_download(args) -> int:
    from bagoftricks import data
    root = args.root or data.DEFAULT_ROOTS.get(args.dataset, "")
    for f in data.download(args.dataset, os.path.expanduser(root)):
        print(f)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bagoftricks", description="Image classification with every trick of "
                                "He et al., Bag of Tricks (CVPR 2019), and ablations that measure them.")
    p.add_argument("--version", action="version", version=f"bagoftricks {__version__}")
    p.add_argument("--debug", action="store_true", help="print tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("train", help="train a recipe into a run folder")
    _add_recipe_args(s)
    s.add_argument("--out", metavar="DIR", help="new run folder")
    s.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest valid checkpoint")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="top-1/top-5 of a checkpoint, as JSON")
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run folder")
    s.add_argument("--data", metavar="ROOT", help="evaluate on this data.root instead of the run's")
    s.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override data.* fields of the run's recipe")
    s.add_argument("--device", default="auto")
    s.add_argument("--ema", action="store_true", help="evaluate the EMA weights (tricks.ema_decay > 0)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("show", help="print the resolved recipe as YAML")
    _add_recipe_args(s)
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("flops", help="parameters and multiply-accumulates of a model")
    s.add_argument("--model", default="resnet50")
    s.add_argument("--variant", default="A")
    s.add_argument("--image-size", type=int, default=0, help="default: the model's native size")
    s.add_argument("--num-classes", type=int, default=1000)
    s.add_argument("--in-channels", type=int, default=3)
    s.add_argument("--width", type=int, default=0)
    s.add_argument("--se-reduction", type=int, default=0)
    s.add_argument("--groups", type=int, default=1)
    s.add_argument("--width-per-group", type=int, default=0)
    s.add_argument("--width-mult", type=float, default=1.0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_flops)

    s = sub.add_parser("download", help="fetch a dataset from its official location (MD5-checked)")
    s.add_argument("dataset", choices=["fashion_mnist", "cifar10", "cifar100"])
    s.add_argument("--root", help="target folder (default: the dataset's default root)")
    s.set_defaults(func=cmd_download)

    _add_later_commands(sub)
    return p


def _add_later_commands(sub) -> None:
    """Commands that live in their own modules register their parsers here (a broken import fails loudly)."""
    import importlib
    for modname in ("bagoftricks.ablate", "bagoftricks.report", "bagoftricks.bench"):
        importlib.import_module(modname).add_cli(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - mapped to exit codes by errors.exit_code
        if isinstance(e, TrainingInterrupted):
            print(f"stopped: {e}", file=sys.stderr)
        elif isinstance(e, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        else:
            if args.debug:
                traceback.print_exc()
            # bad input: the message names the field, file or value; a failure also names its kind
            print(f"error: {e}" if isinstance(e, BadInput) else f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
