"""The run folder: everything needed to reproduce and inspect one run.

    DIR/recipe.yaml       resolved recipe (what was trained, with every default spelled out)
    DIR/env.json          versions, device, git sha, seed, world size, command line
    DIR/metrics.jsonl     one JSON record per epoch
    DIR/checkpoints/      step-N.pt (atomic) and the 'latest' pointer
    DIR/tb/               TensorBoard event files
    DIR/run.log           the human-readable log (also printed)
    DIR/final.json        the last epoch's record and the wall time, once the run is complete
    DIR/skipped.json      the samples the data readers skipped (split, file, reason), when there were any

Only rank 0 writes here. This module decides whether a folder is a new run or a continuation
(`prepare_run_folder`, and `plan_run`, which tells every rank), writes the log, the metrics and the
environment record.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from bagoftricks import __version__, errors
from bagoftricks import recipe as brecipe
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import run_epochs
from bagoftricks.checkpoint import CKPT_DIR, newest_valid_checkpoint
from bagoftricks.errors import UsageError
from bagoftricks.files import atomic_write_text, read_json_object, read_jsonl, write_json


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


def _cpuinfo() -> str:
    """/proc/cpuinfo's text, '' where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor() or platform.machine()


ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")      # the matrix/vector units that set CPU speed
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")


def cpu_isa(cpuinfo: str | None = None) -> dict:
    """What a CPU run could use: which of ISA_FLAGS /proc/cpuinfo lists, ATen's kernel level
    (torch.backends.cpu.get_cpu_capability()) and the environment variables that cap oneDNN's or ATen's ISA or
    the threads, where set. A run timed with oneDNN held to AVX2 on an AMX CPU says so here."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines()
                  if line.startswith("flags")), set())
    return {"cpu_flags": [f for f in ISA_FLAGS if f in flags],
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}}


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
    if device.type == "cpu":
        rec.update(cpu_isa())
    rec.update(extra or {})
    return rec


# ----------------------------------------------------------------------------------- skipped samples
SKIPPED_FILE = "skipped.json"
SKIPPED_SHOWN = 3  # samples a log line names; skipped.json has them all


def skipped_records(skipped: list[tuple[str, str, str]]) -> list[dict]:
    """skipped.json's records: {"split", "file", "reason"}, the reason without a leading "FILE: "."""
    return [{"split": s, "file": f, "reason": why[len(f) + 2:] if why.startswith(f + ": ") else why}
            for s, f, why in skipped]


def skipped_lines(skipped: list[tuple[str, str, str]]) -> list[str]:
    """One line per split with skipped samples: the count and the first SKIPPED_SHOWN files with their reason."""
    lines, records = [], skipped_records(skipped)
    for split in dict.fromkeys(r["split"] for r in records):
        recs = [r for r in records if r["split"] == split]
        shown = "; ".join(f"{Path(r['file']).name}: {r['reason']}" for r in recs[:SKIPPED_SHOWN])
        more = f"; and {len(recs) - SKIPPED_SHOWN} more" if len(recs) > SKIPPED_SHOWN else ""
        lines.append(f"skipped {len(recs)} {split} sample(s) (all in {SKIPPED_FILE}; data.strict: true makes "
                     f"them errors): {shown}{more}")
    return lines


# --------------------------------------------------------------------------------------------- metrics
def earlier_attempts_wall(metrics: Path, acc: dict) -> float:
    """Wall seconds the attempts before a resume spent: the finished epochs' (`metrics`, metrics.jsonl truncated to
    them) and the resumed epoch's before its stop (`acc`, the checkpoint's accumulators); their set-up times are not
    recorded, so a resumed run's wall_seconds undercounts by those only."""
    return sum(float(m.get("seconds") or 0.0) for m in read_jsonl(metrics)) + float(acc.get("wall", 0.0))


def truncate_metrics(path: Path, keep_epochs: int) -> None:
    """Keep the records of epochs 1..keep_epochs of metrics.jsonl (a resumed run rewrites the later ones)."""
    copy_metrics(path, path, keep_epochs)


def copy_metrics(src: Path, dest: Path, keep_epochs: int) -> None:
    """Write the records of epochs 1..keep_epochs of `src` (a metrics.jsonl) to `dest`."""
    recs = [r for r in read_jsonl(src) if r.get("epoch", 0) <= keep_epochs]
    atomic_write_text(Path(dest), "".join(json.dumps(r) + "\n" for r in recs))


class RunLog:
    """The run's messages: printed and appended to DIR/run.log, on rank 0 only."""

    def __init__(self, path: Path | None, dinfo: bdist.DistInfo):
        self.path, self.on = path, dinfo.is_main

    def _write(self, line: str) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def log(self, msg: str) -> None:
        if self.on:
            print(msg, flush=True)
            self._write(msg)

    def warn(self, msg: str) -> None:
        self.warning_line(f"warning: {msg}")

    def warning_line(self, line: str) -> None:
        """A ready-made 'warning: ...' line (the sink of console.warnings_to while the run goes)."""
        if self.on:
            print(line, file=sys.stderr, flush=True)
            if self.path is not None and self.path.parent.is_dir():
                self._write(line)


def tensorboard(path: Path):
    """A SummaryWriter for DIR/tb, or None when tensorboard cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is a dependency, but a broken install must not kill training
        return None
    return SummaryWriter(str(path))


# ------------------------------------------------------------------------------- new or continued run
def recorded_asked(run_dir: Path) -> dict:
    """What a run folder's run was asked where its recipe.yaml records what the run resolved (recipe.ASKED_FIELDS,
    from env.json): {"train.budget": "3min", "train.precision": "auto"}, {} for a run that resolved nothing."""
    env = read_json_object(Path(run_dir) / "env.json")
    asked = {k: v for k, v in (env.get("asked") or {}).items() if k in brecipe.ASKED_FIELDS}
    rec = env.get("budget")
    if isinstance(rec, dict) and rec.get("budget"):
        asked["train.budget"] = str(rec["budget"])
        if rec.get("milestones") is not None:  # a step schedule's, moved with the budget's length
            asked["schedule.milestones"] = list(rec["milestones"])
    return asked


def record_length(out: Path, r: brecipe.Recipe, steps: int, budget: dict) -> None:
    """A budget's re-size of the run in `out`: recipe.yaml holds the re-sized recipe `r` (its `steps` steps), env.json
    the budget's record with the re-size."""
    atomic_write_text(out / "recipe.yaml", brecipe.dump(r))
    write_json(out / "env.json", dict(read_json_object(out / "env.json"), steps=steps, budget=budget))


def check_same_recipe(requested: brecipe.Recipe, state: dict, out: Path) -> None:
    """train.resume: auto continues a folder only if it holds a run of the same recipe."""
    there = brecipe.from_dict(state["recipe"])
    diff = brecipe.run_diff(requested, there, recorded_asked(out), ignore=("train.resume",))
    if diff:
        shown = ", ".join(f"{k}: {b!r} there, {a!r} here" for k, a, b in diff[:3])
        raise UsageError(f"train.resume: auto: run folder {out} holds a run of another recipe ({shown}"
                         f"{', ...' if len(diff) > 3 else ''}); continue it with --resume {out} "
                         f"or choose another --out")


def set_aside(path: Path) -> None:
    """Rename an unreadable checkpoint to *.corrupt: kept for inspection, no longer listed or rotated."""
    try:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    except OSError:
        pass


def _continue_from(out: Path, resume: bool, auto: bool, requested: brecipe.Recipe | None,
                   skipped: list | None) -> tuple[Path | None, dict | None]:
    what = "--resume" if resume else "train.resume: auto"
    if resume and not out.exists():
        raise UsageError(f"--resume: {out} does not exist")
    bad: list = []
    found = newest_valid_checkpoint(out, skipped=bad)
    if found is not None:
        if auto and not resume and requested is not None:
            check_same_recipe(requested, found[1], out)
        for path, msg in bad:
            set_aside(path)
            if skipped is None:
                warnings.warn(f"{msg}; set aside as {path.name}.corrupt, resuming from {found[0].name}", stacklevel=3)
            else:
                skipped.append((path, msg))
        return found
    if bad:
        more = f" (and {len(bad) - 1} older unreadable)" if len(bad) > 1 else ""
        raise UsageError(f"{what}: no valid checkpoint in {out}: {bad[0][1]}{more}; nothing was changed")
    if resume:
        if not (out / "recipe.yaml").is_file():
            raise UsageError(f"--resume: {out} is not a run folder (no recipe.yaml)")
        raise UsageError(f"--resume: no checkpoint in {out / CKPT_DIR}")
    latest = out / CKPT_DIR / "latest"
    if latest.is_file():
        name = latest.read_text().strip()
        raise UsageError(f"{what}: {latest} names {name}, which is missing; refusing to start over in {out}")
    return None, None


def prepare_run_folder(out: Path, resume: bool, auto: bool, requested: brecipe.Recipe | None = None,
                       skipped: list | None = None) -> tuple[Path | None, dict | None]:
    """Decide whether `out` is a fresh run or a continuation; never clobber an existing run.

    resume (--resume DIR) or auto (train.resume: auto, or a torchrun restart) continue from the newest
    checkpoint that loads. Newer unreadable ones are reported (appended to `skipped` as (path,
    message), or warned about when skipped is None) and renamed to *.corrupt. Checkpoints that exist
    but none loads, or a 'latest' pointer without checkpoints, are an error naming the file: never a
    silent start from scratch. auto in a folder without any checkpoint (a first attempt that died
    before its first one) starts afresh there. auto refuses a folder that holds another recipe's run.
    Returns (checkpoint path, checkpoint state), or (None, None) for a fresh run.
    """
    out = Path(out)
    if resume or auto:
        return _continue_from(out, resume, auto, requested, skipped)
    if out.exists() and (out / "recipe.yaml").exists():
        raise UsageError(f"run folder {out} already holds a run; continue it with --resume {out} "
                         f"or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    return None, None


# ------------------------------------------------------------------------------------- the run's plan
class Extends(NamedTuple):
    """A finished run that a new run folder continues past its end (see engine/extend.py)."""
    run: Path          # the finished run folder (only read)
    checkpoint: Path   # its final checkpoint
    state: dict        # that checkpoint, its recipe replaced by the extended one


class RunPlan(NamedTuple):
    """What every rank does with a run folder (`plan_run`)."""
    ckpt: Path | None     # the checkpoint to continue from, or None (a fresh run)
    state: dict | None    # that checkpoint
    skipped: list         # (path, message) of newer checkpoints that do not load (set aside)
    final: dict | None    # the final record when the run is already complete (then nothing else)
    epochs: int           # the complete run's length


def plan_run(out: Path, resume: bool, auto: bool, r: brecipe.Recipe, dinfo: bdist.DistInfo,
             extends: Extends | None = None) -> RunPlan:
    """Rank 0 reads the run folder and tells every rank what to do (no other rank touches it).

    An error on rank 0 is raised on every rank (the same class for the project's own errors), so no
    rank waits for the others.
    """
    plan, err = None, None
    if dinfo.is_main:
        try:
            skipped: list = []
            ckpt, state = prepare_run_folder(out, resume, auto, requested=r, skipped=skipped)
            if extends is not None:  # a new folder (prepare_run_folder refused an existing run)
                ckpt, state = extends.checkpoint, extends.state
            final, epochs = None, 0
            if state is not None:
                rr, spe = brecipe.from_dict(state["recipe"]), state.get("steps_per_epoch")
                epochs = run_epochs(rr, int(spe)) if spe else rr.train.epochs  # older checkpoints: epochs only
                if int(state["epoch"]) >= epochs:  # nothing left to train: no state to send around
                    final, state = read_json_object(out / "final.json"), None
            plan = RunPlan(ckpt, state, [(str(p), m) for p, m in skipped], final, epochs)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            if not dinfo.enabled:
                raise
            err = e
    if not dinfo.enabled:
        return plan
    box = bdist.broadcast_object(("error", type(err).__name__, str(err)) if err is not None else ("ok", plan), dinfo)
    if err is not None:
        raise err
    if box[0] == "error":
        cls = getattr(errors, box[1], None)
        if isinstance(cls, type) and issubclass(cls, (errors.BadInput, errors.RunFailure)):
            raise cls(box[2])
        raise RuntimeError(f"on rank 0: {box[1]}: {box[2]}")
    return RunPlan(*box[1])
