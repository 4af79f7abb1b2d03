"""`bagoftricks report`: tables and figures of ablation sweeps, as Markdown and HTML.

    command.py        the command line: add_arguments (no torch), cmd_report
    page.py           make_report: the page of one or more sweeps, its figures, "how to reproduce"
    blocks.py         the text of a sweep's section: its table, the notes on reading it, what each row changes
    sweep.py          load_sweep: a sweep folder read back and summarised per step (Sweep, Row, CellData)
    stats.py          the 95 % intervals of the Δs over seeds and their reading against the paper
    ran.py            what the cells ran, against the spec (from their recipe.yaml)
    transfer.py       the table and figure of detection/segmentation cells
    figures.py        the figures (matplotlib) · predict.py  test-set logits (torch) · render.py  Markdown, HTML

    make_report(["runs/ablate/t6"], out="docs/results/t6.md")   # the page, figures, HTML and JSON
    load_sweep("runs/ablate/t6").rows[1].ci_prev                 # a row's Δ to the row above, with its interval

The names load on first use, so that importing this package (as the command line does) imports no
torch or matplotlib.
"""
from __future__ import annotations

from bagoftricks.lazy import lazy_exports

# exported name -> the module that defines it (no name equals a module's: `report.sweep` is the module)
_EXPORTS = {
    "make_report": "page",
    "Sweep": "sweep", "load_sweep": "sweep", "summary_json": "sweep",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
