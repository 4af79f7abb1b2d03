"""When a run's time started counting: the process's start for the command line, the call for Python.

`train.budget` covers the whole run. From the command line that is the whole process — interpreter
and torch start-up included, as `time bagoftricks train ...` measures it — so `bagoftricks.cli` marks
the process's start here; a run started from Python (a notebook's kernel may be hours old) counts
from the call that starts it. Imports no torch.
"""
from __future__ import annotations

import os
import time

_PROCESS_START: float | None = None  # wall-clock time.time() of the process start, once the CLI marked it


def process_start() -> float:
    """time.time() at which this process started (Linux: from /proc; elsewhere: now)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return min(time.time(), boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def mark_process_start() -> None:
    """Count runs started by this process from the process's start (the command line does)."""
    global _PROCESS_START
    _PROCESS_START = process_start()


def run_origin() -> float:
    """time.time() from which a run starting now counts its time: the marked process start, else now."""
    return _PROCESS_START if _PROCESS_START is not None else time.time()
