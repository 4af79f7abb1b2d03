"""`bagoftricks ablate`: a ladder or grid of recipe overrides x seeds -> run folders + results.jsonl.

A spec (YAML) names a base recipe and the steps to measure; each (step, seed) cell is an ordinary run
folder under ``OUT/runs/`` trained by ``bagoftricks train``, and ``OUT/results.jsonl`` gets one line per
finished attempt. Re-running the same command skips finished cells, resumes partial ones and keeps
failed ones (``--retry-failed`` starts them afresh).

    spec.py           the spec: parsing, checking, expansion into cells with validated recipes
    folder.py         the sweep folder's files, cell states, results records
    sweep.py          the driver (run_sweep): the plan, which cells run with which command, progress
    launchers.py      where a command runs: the Executor interface, local subprocesses (--jobs N)
    ray_launcher.py   --launcher ray: each command a Ray task (Ray is imported only then)
    cli.py            the command line, and `python -m bagoftricks.ablate`

    run_sweep(load_spec("recipes/ablations/fmnist-table4.yaml"), "runs/ablate/t4", jobs=2)
    spec = parse_spec({"base": {"train": {"epochs": 2}}, "ladder": ["baseline", {"name": "+ cosine",
                       "set": {"schedule.kind": "cosine"}}]})
    [(c.key, cell_recipe(spec, c).schedule.kind) for c in expand(spec, "runs/ablate/cosine")]
    read_results("runs/ablate/t4")["01-linear-scaling-4x-batch/seed0"]["val_top1"]

The names load on first use; everything else (the folder format, the launchers, the command line) stays
in its module.
"""
from __future__ import annotations

from bagoftricks.errors import SpecError as SpecError  # what a bad spec raises (exit 2 on the command line)
from bagoftricks.lazy import lazy_exports

# exported name -> the module that defines it (no name equals a module's)
_EXPORTS = {
    "Cell": "spec", "Spec": "spec", "Step": "spec",
    "cell_recipe": "spec", "expand": "spec", "load_spec": "spec", "parse_spec": "spec",
    "read_results": "folder",
    "run_sweep": "sweep",
}
__all__ = sorted([*_EXPORTS, "SpecError"])


__getattr__ = lazy_exports(__name__, _EXPORTS)
