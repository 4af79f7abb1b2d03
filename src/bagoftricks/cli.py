"""Command line: parse, call the library, print.

Exit codes: 0 ok, 2 bad input (one line naming the field, file or value), 1 other failure, 128+N when
stopped by signal N (130 for SIGINT, 143 for SIGTERM) after writing a checkpoint.

Every command is one row of COMMANDS, and nothing of it is imported before it is needed:

    "export": Command("write a run's model as safetensors, ONNX, ...",
                      arguments="bagoftricks.deploy.cli:export_arguments",   # adds the options; imports no torch
                      run="bagoftricks.deploy.export:cmd_export"),            # fn(args) -> exit status

`arguments` and `run` are "module:function" strings. `bagoftricks --help` imports neither (it lists
the rows' help lines); `bagoftricks CMD ...` imports CMD's `arguments` to build its parser and, once the
options parsed, its `run`. So `arguments` lives in code that imports no torch (this module, or a
torch-free CLI module of the command's package, as ablate/cli.py), and every option gets a help line;
`run` may import anything. tests/test_cli.py checks both for every row: `CMD --help` imports no torch,
and no option lacks its help. `--debug` (tracebacks) is accepted before or after the command.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bagoftricks import __version__
from bagoftricks.console import routed_warnings
from bagoftricks.errors import BadInput, TrainingInterrupted, UsageError, exit_code

EXIT_OK = 0


@dataclass(frozen=True)
class Command:
    help: str          # the line `bagoftricks --help` shows
    arguments: str     # "module:function(parser)": adds the command's options; that module imports no torch
    run: str           # "module:function(args) -> exit status": imported only when the command runs


COMMANDS: dict[str, Command] = {
    "train": Command("train a recipe into a run folder, continue one (--resume) or extend it (--epochs)",
                     "bagoftricks.cli:train_arguments", "bagoftricks.cli:cmd_train"),
    "eval": Command("top-1/top-5 of a checkpoint on its test set, as JSON",
                    "bagoftricks.cli:eval_arguments", "bagoftricks.cli:cmd_eval"),
    "show": Command("print the resolved recipe as YAML (nothing runs)",
                    "bagoftricks.cli:recipe_arguments", "bagoftricks.cli:cmd_show"),
    "recipes": Command("list the recipes shipped with the package, by the name --recipe accepts",
                       "bagoftricks.cli:recipes_arguments", "bagoftricks.cli:cmd_recipes"),
    "models": Command("list the model zoo: family, size, parameters, MACs, ResNet variants",
                      "bagoftricks.cli:models_arguments", "bagoftricks.cli:cmd_models"),
    "flops": Command("parameters and multiply-accumulates of one model",
                     "bagoftricks.cli:flops_arguments", "bagoftricks.cli:cmd_flops"),
    "download": Command("fetch a dataset from its official location (MD5-checked)",
                        "bagoftricks.cli:download_arguments", "bagoftricks.cli:cmd_download"),
    "ablate": Command("run a ladder or grid of recipe overrides x seeds (Tables 4-6) into run folders",
                      "bagoftricks.ablate.cli:add_arguments", "bagoftricks.ablate.cli:cmd_ablate"),
    "report": Command("tables and figures of ablation sweeps (Markdown + HTML)",
                      "bagoftricks.report.command:add_arguments", "bagoftricks.report.command:cmd_report"),
    "transfer": Command("fine-tune a backbone as a Faster R-CNN detector or an FCN segmenter (§6) into a run folder",
                        "bagoftricks.cli:transfer_arguments", "bagoftricks.transfer.cli:cmd_transfer"),
    "export": Command("write a run's model as safetensors, torchvision/timm weights, ONNX or torch.export",
                      "bagoftricks.deploy.cli:export_arguments", "bagoftricks.deploy.export:cmd_export"),
    "predict": Command("top-k classes of image files or folders with a run's model",
                       "bagoftricks.deploy.cli:predict_arguments", "bagoftricks.deploy.predict:cmd_predict"),
    "bench": Command("training/eval/loader img/s, peak memory, MFU and speed-up over plain PyTorch",
                     "bagoftricks.cli:bench_arguments", "bagoftricks.bench:cmd_bench"),
}


def _function(ref: str) -> Callable:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------------------------ options
def recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", metavar="RECIPE",
                   help="a YAML file, or a shipped recipe's name such as fmnist/fast-3min (an existing file wins; "
                        "`bagoftricks recipes` lists the names); default: the paper's §2 baseline")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a field, e.g. --set optim.lr=0.2 (repeatable)")


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a recipe into a new run folder (--out), continue an interrupted run in its own folder "
                     "(--resume RUN), or extend a finished run to more epochs in a new folder "
                     "(--resume RUN --epochs N --out NEW).")
    recipe_arguments(p)
    p.add_argument("--out", metavar="DIR", help="the new run folder")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its newest valid checkpoint")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="with --resume and --out: extend the finished run RUN to N epochs in the new folder; the "
                        "lr schedule is recomputed for N epochs from the epoch RUN reached (RUN is not touched)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")


def transfer_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Put a classifier's backbone (the model section, its weights model.pretrained) under "
                     "torchvision's Faster R-CNN with an FPN (--task detect) or FCN (--task segment) and train it "
                     "into a run folder like `train` does: metrics.jsonl holds mAP (map_50, map) or mIoU and pixel "
                     "accuracy per epoch.")
    p.add_argument("--task", choices=("detect", "segment"),
                   help="detect or segment (sets transfer.task; default: the --recipe's transfer.task)")
    recipe_arguments(p)
    p.add_argument("--out", metavar="DIR", help="the new run folder")
    p.add_argument("--resume", metavar="RUN", help="continue the transfer run in RUN from its newest valid checkpoint")
    p.add_argument("--draw", type=int, default=0, metavar="N",
                   help="after training, draw the predictions on the first N test images into RUN/predictions/*.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint file, a run folder (its newest valid checkpoint), or a model folder written by "
                        "`export --format hf` (local-dir:DIR, hf-hub:ORG/NAME[@REV])")
    p.add_argument("--data", metavar="ROOT", help="evaluate on this data.root instead of the run's")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override data.* fields of the run's recipe (repeatable)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights (tricks.ema_decay > 0)")
    tta_argument(p, "also report top-1/top-5 with test-time augmentation (default: the run's tricks.tta)")


def tta_argument(p: argparse.ArgumentParser, what: str) -> None:
    from bagoftricks.tricks.catalog import TTA_MODES
    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help=f"{what}: flip = mean logits of the image and its mirror; "
                        "flip_shift = also 1 px shifts, weighted half (airbench94's)")


def models_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The registered models with their parameters and multiply-accumulates per image at their "
                     "native size (variant A, 3 input channels, 1000 classes; 10 for the 28-32 px ResNets), "
                     "counted on the meta device.")
    p.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")


def flops_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet50", help="a name from `bagoftricks models` (default resnet50)")
    p.add_argument("--variant", default="A", help="ResNet tweak of §4: A, B, C or D (default A)")
    p.add_argument("--image-size", type=int, default=0, help="input side in pixels (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--in-channels", type=int, default=3, help="image channels (default 3)")
    p.add_argument("--width", type=int, default=0, help="ResNet base width (default 0: the family's own)")
    p.add_argument("--se-reduction", type=int, default=0, help="squeeze-and-excitation reduction r (0 = off)")
    p.add_argument("--groups", type=int, default=1, help="ResNeXt cardinality")
    p.add_argument("--width-per-group", type=int, default=0, help="ResNeXt width per group (0 = plain ResNet)")
    p.add_argument("--width-mult", type=float, default=1.0, help="MobileNet width multiplier")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def download_arguments(p: argparse.ArgumentParser) -> None:
    from bagoftricks.data.catalog import DEFAULT_ROOTS
    p.add_argument("dataset", choices=sorted(DEFAULT_ROOTS), help="the dataset to fetch")
    p.add_argument("--root", help="target folder (default: the dataset's default root)")


def recipes_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The recipes shipped inside the package, by the name that --recipe (train, show, bench, "
                     "transfer) and an ablation spec's base: accept, each with the first line of its own header "
                     "comment (the preamble it shares with its group skipped).")
    p.add_argument("--json", action="store_true", help="one JSON object per recipe (name, path, summary, header lines)")


def bench_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--windows", type=int, default=5, help="timed windows; the median is reported")
    p.add_argument("--steps", type=int, default=5, help="steps per window")
    p.add_argument("--no-reference", action="store_true", help="skip the plain eager fp32 reference loop")
    p.add_argument("--no-loader", action="store_true", help="skip the loader-only measurement")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile N training steps: time per phase and per operator category")
    p.add_argument("--trace", default="", metavar="FILE", help="with --profile: write a Chrome trace to FILE")
    p.add_argument("--kernels", type=int, default=0, metavar="N",
                   help="CPU: the oneDNN kernels of N training steps (implementation and ISA: AMX, AVX-512, ...) "
                        "and their share of the step")


# ----------------------------------------------------------------------------------- commands
def cmd_show(args: argparse.Namespace) -> int:
    from bagoftricks import recipe
    sys.stdout.write(recipe.dump(recipe.load(args.recipe, args.overrides)))
    return EXIT_OK


def cmd_recipes(args: argparse.Namespace) -> int:
    from bagoftricks import recipe
    folder, summaries = recipe.shipped_folder(), recipe.shipped_summaries()
    if args.json:
        for name, summary in summaries.items():
            path = folder / f"{name}.yaml"
            print(json.dumps({"name": name, "path": str(path), "summary": summary,
                              "header": recipe.recipe_header(path)}))
        return EXIT_OK
    width = max(map(len, summaries), default=0)
    for name, summary in summaries.items():
        print(f"{name:<{width}}  {summary}")
    print(f"`bagoftricks show --recipe NAME` prints one resolved, `train --recipe NAME` trains it; the files are "
          f"in {folder} (ablation specs in {folder / recipe.SPECS_GROUP}).")
    return EXIT_OK


def _run_folder(path: str) -> Path:
    """--resume RUN: a run folder that exists."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--resume: {p} does not exist")
    if not (p / "recipe.yaml").is_file():
        raise UsageError(f"--resume: {p} is not a run folder (no recipe.yaml)")
    return p


def _check_train_options(args: argparse.Namespace) -> None:
    if args.resume and (args.recipe or args.overrides):
        raise UsageError("--resume continues a run with the recipe saved in its folder; drop --recipe/--set "
                         "(to train a finished run longer: --resume RUN --epochs N --out NEW)")
    if args.epochs is not None and not (args.resume and args.out):
        raise UsageError("--epochs N extends a finished run into a new folder: --resume RUN --epochs N --out NEW")
    if args.resume and args.out and args.epochs is None:
        raise UsageError("--resume continues the run in its own folder; --out goes with --epochs N only")
    if not args.resume and not args.out:
        raise UsageError("train: --out DIR is required (or --resume RUN)")


def cmd_train(args: argparse.Namespace) -> int:
    from bagoftricks import recipe
    from bagoftricks.engine import extend_run, train
    _check_train_options(args)
    progress = False if args.no_progress else None
    if args.epochs is not None:
        out = Path(args.out)
        final = extend_run(_run_folder(args.resume), args.epochs, out, progress=progress)
    elif args.resume:
        out = _run_folder(args.resume)
        final = train(recipe.load(out / "recipe.yaml"), out, resume=True, progress=progress)
    else:
        out = Path(args.out)
        final = train(recipe.load(args.recipe, args.overrides), out, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        top1 = final.get("val_top1")
        if top1 is not None:
            print(f"test top-1 {top1:.2f} %  top-5 {final.get('val_top5', float('nan')):.2f} %  "
                  f"({final.get('wall_seconds', 0):.0f} s)")
        print(f"run folder: {out}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from bagoftricks.engine.inference import evaluate_checkpoint
    res = evaluate_checkpoint(args.checkpoint, data_root=args.data, overrides=args.overrides, device=args.device,
                              use_ema=args.ema, tta=args.tta)
    print(json.dumps(res))
    return EXIT_OK


def _check_model_name(name: str) -> None:
    from bagoftricks.models.catalog import list_models
    from bagoftricks.recipe import suggest
    if name not in list_models():
        raise UsageError(f"--model: unknown model {name!r}{suggest(name, list_models())}; "
                         f"`bagoftricks models` lists them")


def cmd_flops(args: argparse.Namespace) -> int:
    from bagoftricks import models
    _check_model_name(args.model)
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


def cmd_models(args: argparse.Namespace) -> int:
    from bagoftricks.models.analysis import zoo_summary
    rows = zoo_summary()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    print(f"{'model':<19} {'family':<13} {'size':>4} {'classes':>7} {'params':>9} {'MACs':>9}  variants  description")
    for r in rows:
        print(f"{r['model']:<19} {r['family']:<13} {r['image_size']:>4} {r['num_classes']:>7} "
              f"{r['params'] / 1e6:>7.2f} M {r['macs'] / 1e9:>7.3f} G  {' '.join(r['variants']) or '-':<8}  "
              f"{r['description']}")
    print("Parameters and MACs of variant A at the model's own size with 3 input channels; `bagoftricks flops "
          "--model NAME --variant D` measures one in another setting. Variants B-D change the stem and the "
          "downsampling (§4); with basic blocks (ResNet-8 to -110 on 28-32 px, ResNet-18/34) A and B are the same.")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from bagoftricks import data
    root = args.root or data.DEFAULT_ROOTS.get(args.dataset, "")
    for f in data.download(args.dataset, os.path.expanduser(root)):
        print(f)
    return EXIT_OK


# ---------------------------------------------------------------------------------- dispatch
def _add_debug(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--debug", action="store_true", default=default, help="print tracebacks for errors")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the options of `commands` (None: all); the other commands are listed with their
    help line only, so that parsing imports nothing of the commands that do not run."""
    p = argparse.ArgumentParser(prog="bagoftricks", description="Image classification with every trick of "
                                "He et al., Bag of Tricks (CVPR 2019), and ablations that measure them.")
    p.add_argument("--version", action="version", version=f"bagoftricks {__version__}")
    _add_debug(p, False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        s = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if commands is None or name in commands:
            _function(cmd.arguments)(s)
            _add_debug(s, argparse.SUPPRESS)  # after the command too; absent unless given
        s.set_defaults(run=cmd.run)
    return p


def _command_word(argv: list[str]) -> str | None:
    """The command in argv: the first word that is not an option (the top level has no option values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _resume_hint(e: TrainingInterrupted) -> str:
    """The command that continues an interrupted run (its folder holds the checkpoint's folder)."""
    run = shlex.quote(str(Path(e.checkpoint).parent.parent))
    command = e.command  # transfer runs set "transfer"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"to continue: torchrun <the same options> -m bagoftricks {command} --resume {run}"
    return f"to continue: bagoftricks {command} --resume {run}"


def _report(e: BaseException, debug: bool) -> None:
    """The one line (two after a stop: how to continue) that an error or a stop prints."""
    if isinstance(e, TrainingInterrupted):
        print(f"stopped: {e}", file=sys.stderr)
        if e.checkpoint is not None:
            print(_resume_hint(e), file=sys.stderr)
    elif isinstance(e, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
    else:
        if debug:
            traceback.print_exc()
        # bad input: the message names the field, file or value; a failure also names its kind
        print(f"error: {e}" if isinstance(e, BadInput) else f"error: {type(e).__name__}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    word = _command_word(argv)
    if word is not None and word not in COMMANDS:
        from bagoftricks.recipe import suggest
        print(f"error: unknown command {word!r}{suggest(word, list(COMMANDS))}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    args = build_parser([word] if word else []).parse_args(argv)
    try:
        with routed_warnings():
            return int(_function(args.run)(args) or 0)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - mapped to exit codes by errors.exit_code
        _report(e, args.debug)
        return exit_code(e)


def entry() -> int:
    """The `bagoftricks` command and `python -m bagoftricks`: main() in a process of its own, whose whole
    life train.budget counts (bagoftricks.clock)."""
    from bagoftricks import clock
    clock.mark_process_start()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
