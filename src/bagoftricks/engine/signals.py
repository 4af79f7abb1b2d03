"""SIGINT/SIGTERM as a flag that the training loop reads at step boundaries."""
from __future__ import annotations

import signal
import threading


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop reads at the end of every step (agreed over ranks).

    A SIGINT after a first signal, before the stop is under way, raises KeyboardInterrupt (stop now,
    no checkpoint: a second Ctrl-C). Repeated SIGTERMs stay graceful: launchers and schedulers may
    send several and follow up with SIGKILL after their own grace period. Once the loop has decided to
    stop and is writing its checkpoint (`stopping`), every further signal is ignored: torchrun sends
    its own SIGTERM to a worker that is already on its way out. Outside the main thread (where Python
    allows no handlers) the flag is never set.
    """

    def __init__(self):
        self.signum = 0
        self.stopping = False
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
            signal.signal(s, h)
        return False
