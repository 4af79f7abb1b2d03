"""Under torchrun: `engine.train` one budgeted run in which rank 1 reads the budget's clock running 10x fast.

Usage: torchrun ... tests/distributed/skewed_budget_main.py OUT KEY=VALUE ...
The ranks of a run time their steps together (every step all-reduces the gradients); a rank that judged its
timing window over by its own clock stopped steps before the others and their collectives no longer paired
up. The skewed clock (and a timing window of dozens of steps) makes rank 1 judge so every time: a run that
ends is one whose ranks agreed.
"""
import os
import sys
import time

from bagoftricks import recipe
from bagoftricks.engine import budget, train
from bagoftricks.errors import RecipeError


class _FastClock:
    """The time module, with perf_counter running 10x fast."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter() -> float:
        return 10.0 * time.perf_counter()


budget.TIMING_SHARE = 0.05  # 1 s of a 20 s budget: rank 0 times dozens of steps where rank 1's clock says 4 are enough
_fit = budget.fit


def _told_fit(*args, **kwargs):
    """budget.fit, printing what this rank's own fit made of its timing (the test reads rank 1's refusal)."""
    try:
        sized, record = _fit(*args, **kwargs)
    except RecipeError as e:
        print(f"rank {os.environ['RANK']} own fit: refused: {e}", flush=True)
        raise
    print(f"rank {os.environ['RANK']} own fit: {record['steps']} steps", flush=True)
    return sized, record


budget.fit = _told_fit
if os.environ["RANK"] == "1":
    budget.time = _FastClock()
train(recipe.load(None, sys.argv[2:]), sys.argv[1], progress=False)
