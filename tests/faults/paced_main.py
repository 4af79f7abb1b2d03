"""`python -m bagoftricks ...` with every training step slowed by $BOT_STEP_SLEEP seconds.

Fault tests send signals or kill workers "mid-run"; the sleep makes sure the run is still going when
they do, without burning CPU. It changes no number: the weights are those of an unpaced run.
Usable as a torchrun script: `torchrun ... tests/faults/paced_main.py train ...`.
"""
import os
import runpy
import sys
import time

from bagoftricks.engine.step import TrainStep

_DELAY = float(os.environ.get("BOT_STEP_SLEEP", "0"))
_set_lr = TrainStep.set_lr


def _paced_set_lr(self, *args, **kwargs):  # called once per training step, before its forward pass
    time.sleep(_DELAY)
    return _set_lr(self, *args, **kwargs)


TrainStep.set_lr = _paced_set_lr
sys.argv[0] = "bagoftricks"
runpy.run_module("bagoftricks", run_name="__main__", alter_sys=True)
