"""Run bagoftricks as real processes (plain, or 2 ranks under torchrun with gloo on CPU) from tests.

Every process gets one torch thread (OMP_NUM_THREADS=1, train.threads=1): the machine has 2 cores
shared with other test runs. Output goes to files (no pipe can fill up and block a worker), and
every wait has a timeout.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from bagoftricks.checkpoint import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
PACED = str(ROOT / "tests" / "faults" / "paced_main.py")  # `python -m bagoftricks` with slowed steps

# The fault-test recipe: 70 images over 2 ranks x 16 (uneven: 35 per rank, 2 steps, 3 left over),
# the per-image loader path, random tricks drawn from per-rank generators, a checkpoint every step.
FAULT_SETS = ("data.name=synthetic", "data.image_size=16", "data.synthetic_samples=70", "data.num_classes=4",
              "model.arch=resnet20", "model.width=4", "train.epochs=4", "train.batch_size=16",
              "data.augment=small", "train.device=cpu", "train.threads=1", "train.checkpoint_every_steps=1",
              "train.keep_checkpoints=2", "data.in_memory=never", "data.workers=0", "tricks.mixup_alpha=0.2",
              "tricks.cutmix_alpha=1.0", "model.drop_path=0.1", "tricks.label_smoothing=0.1",
              "tricks.random_erasing=0.5", "tricks.ema_decay=0.9", "train.eval_batch_size=24")
FAULT_STEPS = 8  # 4 epochs x 2 steps


def sets(items) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items()
         if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT")}
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", BAGOFTRICKS_DIST_TIMEOUT="120")
    e.update(extra)
    return e


def torchrun_cmd(*args: str, nproc: int = 2, max_restarts: int = 0, log_dir: Path | None = None) -> list[str]:
    logs = [f"--log-dir={log_dir}"] if log_dir is not None else []
    return [TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
            "--monitor-interval=0.1", "--tee=3", *logs, *args]


def worker_logs(log_dir: Path) -> str:
    """Every worker's stdout and stderr as torchrun wrote them under --log-dir (all attempts): what each worker
    wrote, apart from what torchrun's console shows when torchrun itself is signalled and shuts down."""
    return "".join(f.read_text(errors="replace") for f in sorted(Path(log_dir).rglob("*.log")))


class Proc:
    """A background process whose stdout+stderr go to a file."""

    def __init__(self, cmd: list[str], log: Path, **env_extra: str):
        self.log = Path(log)
        self._f = open(self.log, "w")
        self.p = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, env=env(**env_extra), cwd=ROOT)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise AssertionError(f"process did not end within {timeout} s; output:\n{self.output()[-4000:]}") from None
        finally:
            self._f.flush()

    def output(self) -> str:
        self._f.flush()
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        return children(self.p.pid)

    def kill_tree(self) -> None:
        for pid in descendants(self.p.pid) + [self.p.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.kill_tree()
        self._f.close()
        return False


def wait_all(procs, timeout: float) -> list[int]:
    """Every process's exit code; past the timeout all are killed and the error shows every output
    (the one still running may be waiting on a peer that failed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(p.p.poll() is None for p in procs):
        time.sleep(0.1)
    codes = [p.p.poll() for p in procs]
    if None in codes:
        for p in procs:
            p.kill_tree()
        outs = "\n".join(f"process {i} (exit code {c}):\n{p.output()[-3000:]}"
                         for i, (p, c) in enumerate(zip(procs, codes)))
        raise AssertionError(f"not every process ended within {timeout} s\n{outs}")
    return codes


def run(cmd: list[str], log: Path, timeout: float, **env_extra: str) -> tuple[int, str]:
    with Proc(cmd, log, **env_extra) as p:
        rc = p.wait(timeout)
        return rc, p.output()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    out = []
    for c in children(pid):
        out += [c] + descendants(c)
    return out


def worker_pid(torchrun: Proc, rank: int) -> int:
    """The pid of the torchrun worker with RANK=rank (read from /proc/PID/environ)."""
    for pid in torchrun.children():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker with RANK={rank} among {torchrun.children()}")


def wait_for(cond, timeout: float, what: str, proc: Proc | None = None, every: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.p.returncode}) before {what}:\n{proc.output()[-4000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" +
                         (f":\n{proc.output()[-4000:]}" if proc is not None else ""))


def has_checkpoint(run_dir: Path, at_least_step: int = 1):
    def cond():
        return any(int(p.stem.split("-")[1]) >= at_least_step for p in list_checkpoints(run_dir))
    return cond


def stop_lines(output: str) -> list[tuple[int, int]]:
    """(signal, global step) of every 'stopped by signal S at global step N' line, one per rank."""
    return [(int(a), int(b)) for a, b in re.findall(r"stopped by signal (\d+) at global step (\d+)", output)]


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[-1])


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_node_cmd(port: int, run_id: str, *args: str) -> list[str]:
    """One of two torchrun agents ('nodes', here on one machine) meeting at a c10d rendezvous."""
    return [TORCHRUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id={run_id}", "--monitor-interval=0.1", "--tee=3", *args]


def reference_2rank(base: Path) -> Path:
    """An uninterrupted 2-rank run of FAULT_SETS, made once per test session (cached on disk).

    It is launched as a two-node job (two torchrun agents, one worker each, c10d rendezvous), so the
    fault tests, which run single-node `torchrun --standalone --nproc-per-node 2`, also check that
    the node layout does not change a number.
    """
    out = Path(base) / "reference-2rank"
    if (out / "final.json").is_file():
        return out
    port = free_port()
    args = ("-m", "bagoftricks", "train", *sets(FAULT_SETS), "--out", str(out), "--no-progress")
    with Proc(two_node_cmd(port, "reference", *args), Path(base) / "reference-node-a.log") as a, \
            Proc(two_node_cmd(port, "reference", *args), Path(base) / "reference-node-b.log") as b:
        codes = wait_all((a, b), 240)
        assert codes == [0, 0], f"exit codes {codes}\nnode a:\n{a.output()[-3000:]}\nnode b:\n{b.output()[-3000:]}"
    return out
