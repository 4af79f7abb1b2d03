"""The run loop's checkpoints: what a run's checkpoint holds, and writing it as a collective.

A checkpoint holds the model, optimizer, scaler, EMA and lookahead state and the position (epoch e,
step s); because every random draw of a step comes from generators seeded by (seed, e, s, rank) and
the data order of epoch e from (seed, e), that is all a run needs to continue bit-exactly (torch's
RNG state is saved as well, for inspection). The file format is `bagoftricks.checkpoint`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bagoftricks import errors
from bagoftricks import recipe as brecipe
from bagoftricks.checkpoint import save_checkpoint
from bagoftricks.engine import distributed as bdist
from bagoftricks.errors import CheckpointWriteError, NonFiniteLoss
from bagoftricks.tricks import unwrap


def nonfinite(model: nn.Module, ema) -> str:
    """The name of the first non-finite floating tensor of the model (or its EMA), or ''."""
    named = list(unwrap(model).state_dict().items())
    if ema is not None:
        named += [(f"ema.{n}", t) for n, t in {**ema.params, **ema.buffers}.items()]
    for n, t in named:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return n
    return ""


def run_state(job: Any, epoch: int, step: int, gstep: int, acc: dict) -> dict:
    """The checkpoint of `job` (see engine.loop.Job) at (epoch, step) = global step `gstep`, with the epoch's
    accumulators `acc`."""
    return {"model": job.model.state_dict(), "optimizer": job.optimizer.state_dict(),
            "scaler": job.scaler.state_dict() if job.scaler.is_enabled() else {},
            "ema": job.ema.state_dict() if job.ema is not None else {},
            "lookahead": job.lookahead.state_dict() if job.lookahead is not None else {},
            "epoch": epoch, "step": step, "global_step": gstep, "steps_per_epoch": job.steps_per_epoch,
            "epoch_acc": acc, "recipe": brecipe.to_dict(job.recipe), **job.describe(),
            "rng": {"torch": torch.get_rng_state()}}


def load_run_state(job: Any, state: dict) -> None:
    """Put a checkpoint's weights and optimizer state back into `job` (its position is the loop's)."""
    job.model.load_state_dict(state["model"])
    job.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        job.scaler.load_state_dict(state["scaler"])
    if job.ema is not None and state.get("ema"):
        job.ema.load_state_dict(state["ema"])
    if job.lookahead is not None and state.get("lookahead"):
        job.lookahead.load_state_dict(state["lookahead"])
    if "rng" in state:
        torch.set_rng_state(state["rng"]["torch"])


def write_checkpoint(job: Any, out: Path, epoch: int, step: int, gstep: int, acc: dict) -> Path | None:
    """A collective: every rank checks the weights, rank 0 writes, every rank learns the outcome."""
    dinfo, steps = job.dinfo, job.steps_per_epoch
    bad = nonfinite(job.model, job.ema)
    if bdist.reduce_max([1.0 if bad else 0.0], dinfo, job.device)[0] > 0:
        raise NonFiniteLoss(f"weights became non-finite ({bad or 'on another rank'}) by global step {gstep} "
                            f"(epoch {epoch + 1 if step else epoch} step {step or steps}); no checkpoint written")
    path, err = None, None
    if dinfo.is_main:
        try:
            state = run_state(job, epoch, step, gstep, acc)
            path = save_checkpoint(out, state, gstep, job.recipe.train.keep_checkpoints)
        except (errors.CheckpointError, CheckpointWriteError) as e:
            if not dinfo.enabled:
                raise
            err = e
    if dinfo.enabled:
        msg = bdist.broadcast_object(str(err) if err is not None else "", dinfo)
        if err is not None:
            raise err
        if msg:
            raise CheckpointWriteError(f"on rank 0: {msg}")
    return path
