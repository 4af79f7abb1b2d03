"""The run folder: everything needed to reproduce and inspect one run.

    DIR/recipe.yaml       resolved recipe (what was trained, with every default spelled out)
    DIR/env.json          versions, device, git sha, seed, world size, command line
    DIR/metrics.jsonl     one JSON record per epoch
    DIR/checkpoints/      step-N.pt (atomic) and the 'latest' pointer
    DIR/tb/               TensorBoard event files
    DIR/run.log           the human-readable log (also printed)
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from bagoftricks import __version__
from bagoftricks.engine.checkpoint import atomic_write_text


def git_sha() -> str:
    """The commit of the bagoftricks checkout that is running (with '-dirty'), or ''."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return ""
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_record(device: torch.device, seed: int, world_size: int, extra: dict | None = None) -> dict:
    import numpy
    import torchvision
    rec = {
        "bagoftricks": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "seed": seed,
        "world_size": world_size,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    rec.update(extra or {})
    return rec


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash: everything before it is good
    return out


def truncate_metrics(path: Path, keep_epochs: int) -> None:
    """Keep the records of epochs 1..keep_epochs (a resumed run rewrites the later ones)."""
    recs = [r for r in read_metrics(path) if r.get("epoch", 0) <= keep_epochs]
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in recs))


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_or_empty(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
