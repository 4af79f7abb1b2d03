"""A tiny finished ablation folder, built in-process with the same functions `bagoftricks ablate` uses
(expand, the plan, engine.train, result records), so the report tests need no subprocesses."""
from __future__ import annotations

from pathlib import Path

import pytest

from bagoftricks import ablate
from bagoftricks.ablate.folder import append_result, result_record
from bagoftricks.ablate.sweep import write_plan
from bagoftricks.engine import train
from bagoftricks.errors import NonFiniteLoss

TINY_BASE = {
    "model": {"arch": "resnet20", "width": 4},
    "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "small"},
    "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
}

SPEC = {
    "name": "tiny ladder",
    "description": "two steps and a diverging one",
    "base": TINY_BASE,
    "seeds": [0, 1],
    "ladder": [
        {"name": "baseline", "paper": 75.0},
        {"name": "+ label smoothing", "set": {"tricks.label_smoothing": 0.1, "schedule.kind": "cosine"},
         "paper": {"top1": 76.5, "verified": False}},
        {"name": "+ diverge", "set": {"optim.lr": 1e30, "train.max_bad_steps": 1}},
    ],
}


def build_sweep(out: Path, spec_body: dict = SPEC, skip: tuple[str, ...] = (),
                extra: tuple[str, ...] = ()) -> ablate.Spec:
    """`extra`: the overrides `ablate --set` would add to every cell."""
    spec = ablate.parse_spec(spec_body)
    cells = ablate.expand(spec, out, extra=extra)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["bagoftricks", "ablate", "spec.yaml", "--out", str(out), *(a for o in extra for a in ("--set", o))]
    write_plan(spec, out, cells, 1, 1, argv, extra=extra)
    for cell in cells:
        if cell.key in skip:
            continue
        try:
            train(ablate.cell_recipe(spec, cell), out / cell.rel_dir, progress=False)
            rec = result_record(spec, out, cell, "ok", None, 0, 1.0)
        except NonFiniteLoss as e:
            rec = result_record(spec, out, cell, "failed", f"error: NonFiniteLoss: {e}", 1, 1.0)
        append_result(out, rec)
    return spec


@pytest.fixture(scope="package")
def tiny_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sweep"
    build_sweep(out)
    return out
