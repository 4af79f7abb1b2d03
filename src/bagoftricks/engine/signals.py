"""SIGINT/SIGTERM as a flag that the training loop reads at step boundaries, and the stop protocol around it."""
from __future__ import annotations

import signal
import threading

import torch

from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.distributed import DistInfo


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop reads at the end of every step (agreed over ranks).

    A SIGINT after a first signal, before the stop is under way, raises KeyboardInterrupt (stop now,
    no checkpoint: a second Ctrl-C). Repeated SIGTERMs stay graceful: launchers and schedulers may
    send several and follow up with SIGKILL after their own grace period. Once the loop has decided to
    stop and is writing its checkpoint (`stopping`), every further signal is ignored: torchrun sends
    its own SIGTERM to a worker that is already on its way out. A launcher's worker (`linger`) goes on
    ignoring SIGTERM after the loop, to its exit: torchrun sends each worker's SIGTERM in turn, and one
    that came after the loop had stopped killed the worker before it said where it stopped (the handlers
    restored, SIGTERM's default action). Outside the main thread (where Python allows no handlers) the
    flag is never set.
    """

    def __init__(self):
        self.signum = 0
        self.stopping = False
        self.linger = False  # stopping, in a launcher's worker: SIGTERM stays ignored after the loop
        self._old = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stopping:
            return
        if self.signum and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __exit__(self, *exc) -> bool:
        for s, h in self._old.items():
            signal.signal(s, signal.SIG_IGN if self.linger and s == signal.SIGTERM else h)
        return False


class StopProtocol:
    """When a run stops early: a signal (StopFlag), or after `after_steps` steps of this process (a testing aid
    that stops as SIGTERM would); every rank stops at the same step, agreed by a collective.

    Used as a context manager around the epochs: the signal handlers are installed for that time only.
    """

    def __init__(self, dinfo: DistInfo, device: torch.device, after_steps: int = 0):
        self.dinfo, self.device, self.after_steps = dinfo, device, after_steps
        self.flag = StopFlag()
        self.done = 0  # steps this process has run

    def __enter__(self) -> StopProtocol:
        self.flag.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self.flag.__exit__(*exc)

    def count_step(self) -> None:
        self.done += 1

    def test_stop(self) -> bool:
        return bool(self.after_steps and self.done >= self.after_steps)

    def local(self) -> int:
        """This process's stop signal number (0 = go on)."""
        return self.flag.signum or (signal.SIGTERM if self.test_stop() else 0)

    def agreed(self) -> int:
        """The stop signal number agreed by all ranks (a collective on every rank; 0 = go on)."""
        return int(bdist.reduce_max([float(self.local())], self.dinfo, self.device)[0])

    def stopping(self) -> None:
        """The loop stops now: further signals (torchrun's own SIGTERM to a stopping worker) are ignored, SIGTERM
        to the process's exit under a launcher."""
        self.flag.stopping = True
        self.flag.linger = self.dinfo.enabled
