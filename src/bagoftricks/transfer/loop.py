"""`run_transfer`: a transfer recipe trained into a run folder by the engine's run loop.

The run folder, checkpoints, stop protocol, progress bar and resume are the engine's (engine.loop's
`run_job`), and the step is its `TrainStep` with the transfer task (transfer.job): metrics.jsonl holds
map_50/map or miou/pixel_acc per evaluated epoch. Since step (e, s) seeds torch's generator from
(seed, e, s) and epoch e's order comes from (seed, e), a resumed run is bit-exact on CPU.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.loop import run_job
from bagoftricks.errors import UsageError
from bagoftricks.recipe import Recipe
from bagoftricks.transfer.job import TransferJob, check_transfer, setup_transfer


def run_transfer(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
                 stop_after_steps: int = 0) -> dict:
    """Train transfer recipe `r` into `out_dir` (resume=True: continue it); returns the final record.
    stop_after_steps (testing aid) stops after that many steps with a checkpoint, as a signal would."""
    if bdist.from_env().enabled:
        raise UsageError("transfer: runs in one process; start it without torchrun")

    def build(rr: Recipe, device: torch.device, dinfo: bdist.DistInfo, state: dict | None) -> TransferJob:
        channels = int(state["in_channels"]) if state is not None else 0  # a resumed run's model
        return setup_transfer(rr, device, load_backbone=state is None, channels=channels)

    return run_job(r, out_dir, build, resume=resume, progress=progress, stop_after_steps=stop_after_steps,
                   validate=check_transfer, command="transfer")
