"""Where a cell's command runs: the Executor interface, the local launcher and its process handling.

The driver (sweep.py) decides which cells run, in which order and with which command, moves failed or
stale folders aside and is the only writer of results.jsonl. A launcher only starts a cell's command
somewhere, says when it ended, and stops it on Ctrl-C. ``--launcher local`` (LocalExecutor) starts
``--jobs N`` subprocesses on this machine; ``--launcher ray`` (ray_launcher.py) runs each command as a
Ray task. Both append a cell's output to its folder's stdout.log and stderr.log with popen_cell.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import bagoftricks
from bagoftricks.ablate.spec import Cell

LAUNCHERS = ("local", "ray")


@dataclass
class Finished:
    """A cell's command ended: its exit code (None when the launcher lost it before it exited), the last
    line of this attempt's stderr (or the launcher's error), and how long it ran."""
    cell: Cell
    code: int | None
    reason: str
    elapsed: float


class Executor:
    """How cell commands are executed. `threads` (train.threads of every cell) and `slots` (cells at
    once) are known after open()."""
    name = "executor"
    threads = 1
    slots = 1

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        """Get ready to run (connect to a cluster, ...); `connect=False` for a dry run."""

    def describe(self) -> str:
        return f"{self.slots} at a time, {self.threads} thread(s) each"

    def free(self) -> int:
        """How many more cells can start now."""
        raise NotImplementedError

    def running(self) -> list[Cell]:
        raise NotImplementedError

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[Finished]:
        """Wait up to `timeout` s; the cells whose commands ended meanwhile."""
        raise NotImplementedError

    def stop(self, grace: float) -> None:
        """Interrupt every running cell (it checkpoints and exits), killing what is left after `grace` s."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ processes of cells
def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA means CPU jobs
        return []


def job_env(slot: int, threads: int, gpus: list[str], base: dict | None = None) -> dict:
    """The environment of the cell in job slot `slot`: its share of the cores, and one GPU (round
    robin over the visible ones when there are more jobs than GPUs; none given: the environment's)."""
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    pkg_root = str(Path(bagoftricks.__file__).resolve().parent.parent)  # the child runs this very bagoftricks
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def popen_cell(cmd: list[str], d: Path, env: dict, preexec_fn: Callable[[], Any] | None = None
               ) -> tuple[subprocess.Popen, int, list[IO[bytes]]]:
    """Start a cell's command with its output appended to d/stdout.log and d/stderr.log; returns the
    process, the offset in stderr.log where this attempt's output starts, and the open files."""
    d.mkdir(parents=True, exist_ok=True)
    out_f = open(d / "stdout.log", "ab")
    err_f = open(d / "stderr.log", "ab")
    offset = err_f.tell()
    # its own session: a Ctrl-C at the terminal reaches only the launcher, which forwards exactly one
    # signal, so the child writes its checkpoint instead of dying on a second one
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True, preexec_fn=preexec_fn)
    return proc, offset, [out_f, err_f]


def stop_procs(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGINT once (the cell finishes its step and writes a checkpoint), then kill after `grace` s."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(path: Path, offset: int) -> str:
    """The last non-blank line written to `path` after byte `offset` ("" when none)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------- the local launcher
@dataclass
class _Job:
    cell: Cell
    proc: subprocess.Popen
    slot: int
    started: float
    err_path: Path
    err_offset: int
    files: list[IO[bytes]]

    def close_files(self) -> None:
        for f in self.files:
            f.close()


class LocalExecutor(Executor):
    """`--jobs N` subprocesses on this machine, each with max(1, cores // N) threads and, when there are
    GPUs, the GPU of its job slot (round robin)."""
    name = "local"

    def __init__(self, jobs: int):
        self.slots = jobs
        self.threads = max(1, available_cores() // jobs)
        self.gpus = visible_gpus()
        self._free = list(range(jobs))
        self._jobs: list[_Job] = []

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        if self.gpus and self.slots > len(self.gpus):
            echo(f"note: {self.slots} jobs share {len(self.gpus)} GPU(s) round robin")

    def free(self) -> int:
        return len(self._free)

    def running(self) -> list[Cell]:
        return [j.cell for j in self._jobs]

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        slot = self._free.pop(0)
        proc, offset, files = popen_cell(cmd, run_dir, job_env(slot, self.threads, self.gpus))
        self._jobs.append(_Job(cell, proc, slot, time.monotonic(), run_dir / "stderr.log", offset, files))

    def poll(self, timeout: float) -> list[Finished]:
        time.sleep(timeout)
        done = []
        for job in list(self._jobs):
            code = job.proc.poll()
            if code is None:
                continue
            self._jobs.remove(job)
            self._free.append(job.slot)
            self._free.sort()
            job.close_files()
            done.append(Finished(job.cell, code, last_line(job.err_path, job.err_offset),
                                 time.monotonic() - job.started))
        return done

    def stop(self, grace: float) -> None:
        stop_procs([j.proc for j in self._jobs], grace)
        for job in self._jobs:
            job.close_files()
        self._jobs.clear()
