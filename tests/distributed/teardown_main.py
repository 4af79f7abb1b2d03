"""Under torchrun: `engine.train` one small run, then print the names of the threads this worker has left.

Usage: torchrun ... tests/distributed/teardown_main.py OUT KEY=VALUE ...
Every thread the process group started (gloo's transport loop and its work threads) must be gone
when train() returns: with them still running into interpreter shutdown, workers of finished runs were
seen to abort (SIGABRT), most likely a gloo thread releasing a tensor, which needs the GIL, then.
"""
import json
import os
import sys

from bagoftricks import recipe
from bagoftricks.engine import train

train(recipe.load(None, sys.argv[2:]), sys.argv[1], progress=False)
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print(f"rank {os.environ['RANK']} threads after train: {json.dumps(names)}", flush=True)
