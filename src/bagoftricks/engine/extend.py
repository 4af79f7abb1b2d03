"""Extending a finished run to more epochs (`bagoftricks train --resume RUN --epochs N --out NEW`).

A finished run is a complete result (its final.json, metrics and last checkpoint are what reports
read), so it is never changed: the extension is a new run folder that starts from RUN's final
checkpoint. Its recipe is RUN's with train.epochs = N and RUN's length appended to
schedule.extended_from: up to RUN's last epoch the lr (and tricks.mix_off_epochs) follow the
schedule RUN was trained with, after it the schedule of an N-epoch run at the step reached — with
cosine or linear decay the lr jumps back up there, so the run is no longer a single-schedule run and
the log says so. Because that recipe states the whole history, training it from scratch
(`bagoftricks train --recipe NEW/recipe.yaml`) gives the same weights, bit for bit on CPU.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from bagoftricks import recipe as brecipe
from bagoftricks.checkpoint import newest_valid_checkpoint
from bagoftricks.engine.loop import train
from bagoftricks.engine.runfolder import Extends
from bagoftricks.errors import UsageError


def extended_recipe(r: brecipe.Recipe, epochs: int) -> brecipe.Recipe:
    """`r` trained on to `epochs` epochs after its own train.epochs."""
    schedule = dataclasses.replace(r.schedule, extended_from=(*r.schedule.extended_from, r.train.epochs))
    longer = dataclasses.replace(r.train, epochs=epochs)
    return brecipe.validate(dataclasses.replace(r, schedule=schedule, train=longer))


def extend_run(run: str | Path, epochs: int, out: str | Path, *, progress: bool | None = None) -> dict:
    """Train the finished run in `run` on to `epochs` epochs in the new run folder `out`; returns the final
    record. `run` is only read; a run that is not finished, or `epochs` not above its length, is a UsageError."""
    run, out = Path(run), Path(out)
    found = newest_valid_checkpoint(run, skipped=[])
    if found is None:
        raise UsageError(f"--resume: no valid checkpoint in {run}")
    path, state = found
    r = brecipe.from_dict(state["recipe"])
    if not brecipe.length_in_epochs(r.train):
        raise UsageError(f"--epochs: {run} is sized in steps (train.steps {r.train.steps}); extending works on runs "
                         f"sized in epochs: start a new run with model.pretrained: {run} instead")
    done, step = int(state["epoch"]), int(state["step"])
    if done < r.train.epochs or step or not (run / "final.json").is_file():
        raise UsageError(f"--epochs: {run} is not finished (its newest valid checkpoint is epoch {done} step {step} "
                         f"of {r.train.epochs} epochs); finish it first with `bagoftricks train --resume {run}`")
    if epochs <= done:
        raise UsageError(f"--epochs: must be more than the {done} epochs {run} was trained for, got {epochs}")
    if out.resolve() == run.resolve():
        raise UsageError(f"--out: {out} is the run to extend; the extension goes to a new folder")
    longer = extended_recipe(r, epochs)
    start = Extends(run, path, dict(state, recipe=brecipe.to_dict(longer)))
    return train(longer, out, progress=progress, extends=start)
