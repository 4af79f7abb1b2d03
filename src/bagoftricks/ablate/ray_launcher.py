"""``--launcher ray [--address ADDR]``: each cell's command runs as a Ray task on the cluster.

A task takes one GPU on a cluster with GPUs (else a share of the CPUs) and runs the cell's
``bagoftricks train`` command on any node that sees OUT at the same path; the driver does everything
else as it does for the local launcher. Ray is optional (``pip install 'bagoftricks[ray]'``): this
module imports it only when a RayExecutor is made. (The module is not called ray.py, so that no name in
the package stands for both this file and Ray.)
"""
from __future__ import annotations

import contextlib
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bagoftricks.ablate.launchers import Executor, Finished, job_env, last_line, popen_cell, stop_procs
from bagoftricks.ablate.spec import Cell
from bagoftricks.errors import LauncherError, UsageError

RAY_HINT = "pip install 'bagoftricks[ray]'"


def import_ray() -> Any:
    """The `ray` module, or a UsageError (exit 2) that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise UsageError(f"--launcher ray needs Ray, which is not installed ({e}); "
                         f"install it with: {RAY_HINT}") from None
    return ray


def probe_address(address: str, timeout: float = 10.0) -> None:
    """A UsageError unless something accepts a TCP connection at a host:port (or ray://host:port)
    address: ray.init waits for an unreachable cluster for minutes, deaf to Ctrl-C. Other forms
    ("auto", "local") are left to Ray."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if m is None:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); "
                         f"start one with `ray start --head` or give its address") from None


def ray_plan(nodes: list[dict], jobs: int, use_gpus: bool = True) -> tuple[int, int, bool]:
    """(threads per cell, cells at once, one GPU per cell?) on a Ray cluster whose alive nodes have the
    resources `nodes` ({"CPU": 16, "GPU": 8, ...} each).

    With GPUs (and cells that may use them), each cell takes one GPU and an equal share of its node's
    CPUs (the smallest share over the GPU nodes, so that every GPU can be used); otherwise each cell
    takes max(1, CPUs // jobs) CPUs of the smallest node, as `--jobs N` does on one machine.
    """
    gpu_nodes = [r for r in nodes if int(r.get("GPU", 0)) >= 1]
    if use_gpus and gpu_nodes:
        threads = max(1, min(int(r.get("CPU", 0)) // int(r["GPU"]) for r in gpu_nodes))
        slots = sum(min(int(r["GPU"]), int(r.get("CPU", 0)) // threads) for r in gpu_nodes)
        return threads, max(1, slots), True
    cpus = [int(r.get("CPU", 0)) for r in nodes if int(r.get("CPU", 0)) >= 1]
    if not cpus:
        raise LauncherError("the Ray cluster has no CPUs to run cells on")
    threads = max(1, min(cpus) // jobs)
    return threads, max(1, sum(c // threads for c in cpus)), False


# ----------------------------------------------------------------------- on the worker's machine
def child_setup(death_signal: int) -> Callable[[], None] | None:
    """The preexec_fn of a cell started by a Ray worker. It unblocks every signal (Ray workers block
    SIGINT, and a blocked mask is inherited: the cell would never see the SIGINT that asks it to
    checkpoint and stop) and, on Linux, has the kernel send `death_signal` to the cell when the worker
    that started it dies (PR_SET_PDEATHSIG: a forced cancel, the OOM killer or a lost raylet then
    SIGTERMs the cell, which writes a checkpoint and exits, instead of leaving it training unseen)."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # an ignored SIGINT survives exec as well: a worker of a Ray instance started from a `nohup`
        # or `&` shell ignores it, and so would the cell
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(1, int(death_signal), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    return setup


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    """Within the block, a SIGINT (and Ray's cancel of a running task, which goes through
    `_thread.interrupt_main`) raises KeyboardInterrupt in the main thread, even in a worker that
    ignores SIGINT: every process of a Ray instance started from a shell's background job (`nohup ...
    &`) inherits an ignored SIGINT, and Python then neither installs its handler nor lets
    interrupt_main do anything, so a cancel would never reach the cell. The old handler comes back
    afterwards. Outside the main thread (no handlers there) nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL):
        yield
        return
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run_cell_command(cmd: list[str], run_dir: str, threads: int) -> dict:
    """The Ray task of a cell: run its train command on the worker's machine, with that machine's Python
    and bagoftricks, `threads` threads and the GPU Ray assigned to the task (Ray sets
    CUDA_VISIBLE_DEVICES), output appended to the cell folder's stdout.log/stderr.log as the local
    launcher does. A cancel from the driver (its Ctrl-C) arrives as KeyboardInterrupt and is forwarded
    once as SIGINT, so the cell writes a checkpoint before it stops. Writes nothing else: the driver
    reads final.json and appends to results.jsonl."""
    with sigint_raises():
        d = Path(run_dir)
        proc, offset, files = popen_cell([sys.executable, *cmd[1:]], d, job_env(0, threads, []),
                                         child_setup(signal.SIGTERM))
        started = time.monotonic()
        try:
            # poll, not wait(): Ray delivers a cancel between Python bytecodes, never inside a blocking wait()
            while (code := proc.poll()) is None:
                time.sleep(0.5)
        except BaseException:
            stop_procs([proc], 120)
            raise
        finally:
            for f in files:
                f.close()
    return {"code": code, "reason": last_line(d / "stderr.log", offset), "elapsed": time.monotonic() - started}


# -------------------------------------------------------------------------------- on the driver
class RayExecutor(Executor):
    """Each cell a Ray task (run_cell_command) with num_cpus=threads and, on a cluster with GPUs, one
    GPU. OUT must be one folder that every node sees at the same path."""
    name = "ray"

    def __init__(self, jobs: int, address: str | None = None, use_gpus: bool = True):
        self.ray = import_ray()
        self.jobs, self.address, self.use_gpus = jobs, address, use_gpus
        self.gpu = False
        self.nodes: list[dict] = []
        self._tasks: list[tuple[Any, Cell, float]] = []  # (ObjectRef, cell, submitted)
        self._remote = None
        self._started_ray = False

    def _connect(self) -> None:
        """ray.init at the user's --address (a UsageError when it cannot be reached) or a local instance
        (a LauncherError when it cannot start)."""
        if self.address is not None:
            probe_address(self.address)
        kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False}
        if self.address is None:
            kwargs["include_dashboard"] = False
        try:
            self.ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if self.address is not None:
                raise UsageError(f"--launcher ray: could not connect to --address {self.address}: {msg}") from None
            raise LauncherError(f"--launcher ray: could not connect to a local Ray instance: {msg}") from None
        self._started_ray = True

    def open(self, echo: Callable[[str], None], connect: bool = True) -> None:
        if not connect:
            return
        if not self.ray.is_initialized():
            self._connect()
        self.nodes = [dict(n.get("Resources") or {}) for n in self.ray.nodes() if n.get("Alive")]
        self.threads, self.slots, self.gpu = ray_plan(self.nodes, self.jobs, self.use_gpus)
        self._remote = self.ray.remote(run_cell_command)
        cpus = sum(int(r.get("CPU", 0)) for r in self.nodes)
        gpus = sum(int(r.get("GPU", 0)) for r in self.nodes)
        echo(f"ray: {len(self.nodes)} node(s), {cpus} CPU(s), {gpus} GPU(s)")

    def describe(self) -> str:
        if self._remote is None:
            return "as Ray tasks"
        return (f"as Ray tasks, up to {self.slots} at a time, {self.threads} thread(s)"
                f"{' and 1 GPU' if self.gpu else ''} each")

    def free(self) -> int:
        return max(0, self.slots - len(self._tasks))

    def running(self) -> list[Cell]:
        return [cell for _, cell, _ in self._tasks]

    def start(self, cell: Cell, cmd: list[str], run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        opts = {"num_cpus": self.threads, "num_gpus": 1 if self.gpu else 0, "max_retries": 0,
                "name": f"bagoftricks-ablate:{cell.key}"}
        ref = self._remote.options(**opts).remote(cmd, str(run_dir), self.threads)
        self._tasks.append((ref, cell, time.monotonic()))

    def poll(self, timeout: float) -> list[Finished]:
        if not self._tasks:
            time.sleep(timeout)
            return []
        refs = [t[0] for t in self._tasks]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        done = []
        for ref in ready:
            i = next(i for i, t in enumerate(self._tasks) if t[0] == ref)
            _, cell, submitted = self._tasks.pop(i)
            try:
                res = self.ray.get(ref)
                done.append(Finished(cell, int(res["code"]), str(res.get("reason") or ""), float(res["elapsed"])))
            except Exception as e:  # noqa: BLE001 - the task or its worker/node died: the cell failed
                err = getattr(e, "cause", None) or e
                text = str(err).strip().splitlines()
                done.append(Finished(cell, None, f"ray: {type(err).__name__}" + (f": {text[0]}" if text else ""),
                                     time.monotonic() - submitted))
        return done

    def _cancel(self, refs: list, force: bool) -> None:
        for ref in refs:
            try:
                self.ray.cancel(ref, force=force)
            except Exception:  # noqa: BLE001 - a task that already ended cannot be cancelled
                pass

    def stop(self, grace: float) -> None:
        refs = [t[0] for t in self._tasks]
        self._cancel(refs, force=False)  # KeyboardInterrupt in the task, which forwards SIGINT to its cell
        if refs:
            _, left = self.ray.wait(refs, num_returns=len(refs), timeout=grace)
            self._cancel(left, force=True)
        self._tasks.clear()

    def close(self) -> None:
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False
