"""`bagoftricks report DIR [DIR ...]`: tables and figures of ablation sweeps, as Markdown and HTML.

For each sweep folder written by `bagoftricks ablate` (cells.json, results.jsonl, runs/):
  * a table per ladder/grid: final top-1/top-5 mean ± std over seeds, Δ vs the previous row and vs
    the first row, the paper's number when the spec gives one, img/s and seconds per epoch (the
    efficiency view of Table 3), params and MACs, the number of seeds; failed cells listed below;
  * figures (PNG in figures/): lr per iteration per step (Figure 3a), validation top-1 per epoch with
    a min-max band over seeds (Figure 3b), Δ top-1 per step with error bars, the logit-gap
    distribution with and without label smoothing against log((K-1)(1-ε)/ε) (Figure 4; only when the
    sweep has finished cells of both kinds), the confusion matrix of the best cell;
  * a "how to reproduce" section with the commands.

Default output: DIR/report.md, DIR/report.html (figures inlined as base64), DIR/figures/*.png and
DIR/report.json (the tables as data). With --out FILE.md (e.g. docs/results/fmnist.md) the page goes
there, its figures to FILE's folder/figures/, the HTML next to it (unless --no-html). Figures are named
after their sweep, so a page of sweeps that another page of the same folder already shows is refused
(exit 2) rather than overwriting that page's figures: give it its own folder.
"""
from __future__ import annotations

import argparse
import sys

# The command line imports this module to build the parser of `bagoftricks report`: the page (and with it
# matplotlib and torch) is imported only when the command runs.


def cmd_report(args: argparse.Namespace) -> int:
    from bagoftricks.report.page import make_report
    argv = ["bagoftricks", "report", *args.dirs]
    if args.title:
        argv += ["--title", args.title]
    if args.out:
        argv += ["--out", args.out]
    if args.no_predict:
        argv.append("--no-predict")
    paths = make_report(args.dirs, out=args.out, title=args.title, predict=not args.no_predict,
                        html=not args.no_html, device=args.device, argv=argv,
                        echo=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"report: {paths['markdown']}" + (f", {paths['html']}" if "html" in paths else "")
          + f" ({len(paths['figures'])} figures)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `bagoftricks report` (this module imports no torch)."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep folder(s) written by `bagoftricks ablate`")
    p.add_argument("--out", metavar="FILE.md", help="write the page here (default: DIR/report.md); figures go to "
                                                    "FILE's folder/figures/")
    p.add_argument("--title", help="page title")
    p.add_argument("--no-predict", action="store_true",
                   help="skip the figures that evaluate checkpoints (logit gap, confusion matrix)")
    p.add_argument("--no-html", action="store_true", help="Markdown only")
    p.add_argument("--device", default="cpu", help="device for the checkpoint evaluations (default cpu)")
