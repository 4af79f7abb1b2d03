"""`bagoftricks ablate --launcher ray`: the same small sweep as tests/test_ablate.py, once with the local
launcher and once with every cell's `bagoftricks train` command run as a Ray task on a local 2-CPU Ray
instance. Both give the same run folders and results.jsonl records; a partial cell is resumed, a failing
cell is recorded while the others finish (exit 1), and a second run skips finished cells untouched.
The checks that need no Ray: the install hint when Ray is missing, `import bagoftricks` not importing
ray, how cells are sized on a cluster, and what a cell asks Ray for."""
from __future__ import annotations

import _thread
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bagoftricks import ablate
from bagoftricks.ablate.folder import LOCK
from bagoftricks.ablate.launchers import LocalExecutor
from bagoftricks.ablate.ray_launcher import ray_plan
from bagoftricks.ablate.sweep import make_executor
from bagoftricks.cli import main
from bagoftricks.errors import LauncherError
from tests.test_ablate import TINY_BASE, _tree_mtimes, write_spec

SPEC = {"name": "tiny-ray", "base": TINY_BASE, "set": {"train.epochs": 1}, "seeds": [0, 1], "ladder": [
    {"name": "baseline"},
    {"name": "+ diverge", "set": {"optim.lr": 1e30, "train.max_bad_steps": 1}}]}
CELLS = ["00-baseline/seed0", "00-baseline/seed1", "01-diverge/seed0", "01-diverge/seed1"]
SAME = ("spec", "kind", "step", "index", "seed", "cell", "run_dir", "overrides", "status", "exit_code", "epochs",
        "val_top1", "val_top5", "params", "macs")


# --------------------------------------------------------------------------------------- no Ray needed
def test_ray_launcher_without_ray_exits_2_with_the_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    p = write_spec(tmp_path, {"base": TINY_BASE, "seeds": 1, "ladder": ["a"]})
    out = tmp_path / "out"
    assert main(["ablate", str(p), "--out", str(out), "--launcher", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bagoftricks[ray]'" in err and "--launcher ray" in err, err
    assert not out.exists()


def test_address_needs_the_ray_launcher(tmp_path, capsys):
    p = write_spec(tmp_path, {"base": TINY_BASE, "seeds": 1, "ladder": ["a"]})
    assert main(["ablate", str(p), "--out", str(tmp_path / "out"), "--address", "auto"]) == 2
    assert "--address" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_unreachable_address_exits_2_before_anything_is_written(tmp_path, capsys):
    p = write_spec(tmp_path, {"base": TINY_BASE, "seeds": 1, "ladder": ["a"]})
    argv = ["ablate", str(p), "--out", str(tmp_path / "out"), "--launcher", "ray", "--address", "127.0.0.1:1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_importing_bagoftricks_does_not_import_ray():
    code = ("import sys, bagoftricks, bagoftricks.ablate, bagoftricks.cli; bagoftricks.cli.build_parser(); "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_ray_plan_gives_one_gpu_per_cell_or_a_share_of_the_cpus():
    assert ray_plan([{"CPU": 2}], jobs=2) == (1, 2, False)
    assert ray_plan([{"CPU": 16}, {"CPU": 8.0}], jobs=2) == (4, 6, False)
    # a CPU-only head node runs no cells; each GPU node gives every GPU an equal share of its CPUs
    assert ray_plan([{"CPU": 4}, {"CPU": 32, "GPU": 8}, {"CPU": 16, "GPU": 4}], jobs=1) == (4, 12, True)
    assert ray_plan([{"CPU": 32, "GPU": 8}], jobs=4, use_gpus=False) == (8, 4, False)  # device=cpu cells
    with pytest.raises(LauncherError, match="no CPUs"):
        ray_plan([{"memory": 1e9}], jobs=1)


class _FakeRay:
    """Just enough of the ray module to see what RayExecutor asks for."""

    def __init__(self, nodes):
        self._nodes, self.inited, self.shut, self.options = nodes, None, False, []

    def is_initialized(self):
        return self.inited is not None

    def init(self, **kw):
        self.inited = kw

    def shutdown(self):
        self.shut = True

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self._nodes] + [{"Alive": False, "Resources": {"GPU": 64}}]

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **opts):
                fake.options.append(opts)
                return self

            def remote(self, cmd, run_dir, threads):
                return ("ref", run_dir, threads)
        return Remote()

    def wait(self, refs, num_returns, timeout):
        return list(refs), []

    def get(self, ref):
        return {"code": 0, "reason": "", "elapsed": 1.5}


def test_ray_executor_asks_for_one_gpu_and_a_share_of_cpus(tmp_path, monkeypatch):
    fake = _FakeRay([{"CPU": 8}, {"CPU": 16, "GPU": 2}])
    monkeypatch.setitem(sys.modules, "ray", fake)
    ex = make_executor("ray", jobs=1, address="auto")
    lines: list[str] = []
    ex.open(lines.append)
    assert fake.inited == {"address": "auto", "log_to_driver": False}
    assert (ex.threads, ex.slots, ex.free()) == (8, 2, 2) and "2 node(s), 24 CPU(s), 2 GPU(s)" in lines[0]
    cell = ablate.expand(ablate.parse_spec({"base": TINY_BASE, "ladder": ["a"]}), tmp_path, seeds=(0,))[0]
    ex.start(cell, ["py", "-m", "bagoftricks", "train"], tmp_path / cell.rel_dir)
    assert fake.options == [{"num_cpus": 8, "num_gpus": 1, "max_retries": 0, "name": "bagoftricks-ablate:00-a/seed0"}]
    assert ex.running() == [cell] and ex.free() == 1
    (done,) = ex.poll(0)
    assert (done.cell, done.code, done.elapsed) == (cell, 0, 1.5) and ex.free() == 2
    ex.close()
    assert fake.shut  # it started Ray, so it stops it; an instance that was already running is left alone
    fake2 = _FakeRay([{"CPU": 4}])
    fake2.inited = {}
    monkeypatch.setitem(sys.modules, "ray", fake2)
    ex2 = make_executor("ray", jobs=2, use_gpus=False)
    ex2.open(lambda s: None)
    ex2.close()
    assert fake2.inited == {} and not fake2.shut and (ex2.threads, ex2.slots, ex2.gpu) == (2, 2, False)


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored in this process, as in every process of a shell's background job (`nohup ... &`)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, old)


def _interrupt_main_and_wait() -> None:
    _thread.interrupt_main()
    for _ in range(1000):  # the KeyboardInterrupt, if any, arrives between bytecodes
        time.sleep(0.001)


def test_sigint_raises_lets_a_cancel_through_in_a_worker_that_ignores_sigint(sigint_ignored):
    from bagoftricks.ablate.ray_launcher import sigint_raises
    _interrupt_main_and_wait()  # what Ray's cancel does: nothing at all while SIGINT is ignored
    with pytest.raises(KeyboardInterrupt), sigint_raises():
        _interrupt_main_and_wait()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the worker's own disposition is back
    with pytest.raises(KeyboardInterrupt), sigint_raises():
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT too
        for _ in range(1000):
            time.sleep(0.001)
    custom = []
    signal.signal(signal.SIGINT, lambda s, f: custom.append(s))
    with sigint_raises():  # a handler somebody installed is left alone
        assert signal.getsignal(signal.SIGINT) != signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN


def test_a_cell_started_by_a_worker_that_ignores_sigint_gets_the_default_handler(sigint_ignored):
    from bagoftricks.ablate.ray_launcher import child_setup
    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "False"  # an ignored SIGINT is inherited through exec
    cell = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=child_setup(signal.SIGTERM))
    assert cell.stdout.strip() == "True"


# ------------------------------------------------------------------------------ a real sweep on Ray
@pytest.fixture(scope="module")
def ray_instance(request):
    import ray  # `make setup` installs '.[dev,ray]': a missing Ray fails here rather than skipping
    # "local": a fresh instance even when RAY_ADDRESS or a `ray start` cluster is around
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    request.addfinalizer(ray.shutdown)
    return ray


def _no_local_subprocess(self, cell, cmd, run_dir):
    raise AssertionError(f"{cell.key} was started as a local subprocess")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, ray_instance):
    """The spec run with the local launcher and with the Ray one, each with 00-baseline/seed1 left
    partial (a checkpoint after its first step) beforehand; --jobs 2 on 2 CPUs."""
    from bagoftricks.engine import train
    from bagoftricks.errors import TrainingInterrupted
    tmp = tmp_path_factory.mktemp("ablate_ray")
    p = write_spec(tmp, SPEC)
    spec = ablate.load_spec(p)
    got: dict = {"spec": spec, "path": p}
    for launcher in ("local", "ray"):
        out = tmp / launcher
        partial = ablate.expand(spec, out)[1]
        assert partial.key == "00-baseline/seed1"
        with pytest.raises(TrainingInterrupted):
            train(ablate.cell_recipe(spec, partial), out / partial.rel_dir, progress=False, stop_after_steps=1)
        lines: list[str] = []
        t0 = time.monotonic()
        with pytest.MonkeyPatch.context() as mp:
            if launcher == "ray":  # every cell must run as a Ray task
                mp.setattr(LocalExecutor, "start", _no_local_subprocess)
            code = ablate.run_sweep(spec, out, jobs=2, echo=lines.append, launcher=launcher)
        got[launcher] = {"out": out, "code": code, "lines": lines, "seconds": time.monotonic() - t0}
    return got


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _folders(out: Path) -> list[str]:
    return sorted(str(d.relative_to(out)) for d in (out / "runs").glob("*/*"))


def test_ray_sweep_records_the_same_results_as_the_local_launcher(sweeps):
    local, ray_ = sweeps["local"], sweeps["ray"]
    assert local["code"] == ray_["code"] == 1
    assert _folders(ray_["out"]) == _folders(local["out"]) == [f"runs/{c}" for c in CELLS]
    recs = {k: _records(sweeps[k]["out"]) for k in ("local", "ray")}
    assert sorted(r["cell"] for r in recs["ray"]) == sorted(r["cell"] for r in recs["local"]) == CELLS
    by = {k: {r["cell"]: r for r in v} for k, v in recs.items()}
    for cell in CELLS:
        mine, theirs = by["ray"][cell], by["local"][cell]
        assert {k: mine[k] for k in SAME} == {k: theirs[k] for k in SAME}, cell
    assert [by["ray"][c]["status"] for c in CELLS] == ["ok", "ok", "failed", "failed"]
    for c in CELLS[2:]:
        bad = by["ray"][c]
        assert bad["exit_code"] == 1 and "NonFiniteLoss" in bad["reason"]
        assert (ray_["out"] / bad["run_dir"] / "stderr.log").is_file()
    ok = by["ray"]["00-baseline/seed0"]
    assert ok["val_top1"] == json.loads((ray_["out"] / ok["run_dir"] / "final.json").read_text())["val_top1"]
    assert isinstance(ok["elapsed_seconds"], float) and ok["elapsed_seconds"] > 0
    plans = {k: json.loads((sweeps[k]["out"] / "cells.json").read_text()) for k in ("local", "ray")}
    assert plans["ray"]["launcher"] == "ray" and plans["local"]["launcher"] == "local"
    assert [c["command"] for c in plans["ray"]["cells"]] == [
        c["command"].replace(str(local["out"]), str(ray_["out"].resolve())) for c in plans["local"]["cells"]]
    assert any(re.match(r"\[\d/4\] failed +01-diverge/seed1 .*NonFiniteLoss", ln) for ln in ray_["lines"])


def test_ray_sweep_resumes_the_partial_cell_and_runs_cells_side_by_side(sweeps):
    out, lines = sweeps["ray"]["out"], sweeps["ray"]["lines"]
    assert any("as Ray tasks, up to 2 at a time, 1 thread(s) each" in ln for ln in lines)
    assert any("start" in ln and "00-baseline/seed1 (resume)" in ln for ln in lines)
    d = out / "runs/00-baseline/seed1"
    assert "resumed from" in (d / "run.log").read_text()
    assert [json.loads(ln)["epoch"] for ln in (d / "metrics.jsonl").read_text().splitlines()] == [1]
    first_end = next(i for i, ln in enumerate(lines) if re.match(r"\[\d+/\d+\] (ok|failed)", ln))
    assert sum(1 for ln in lines[:first_end] if "] start" in ln) == 2
    env = json.loads((out / "runs/00-baseline/seed0/env.json").read_text())
    assert "train.threads=1" in env["argv"]


def _written(out: Path) -> dict:
    return {k: v for k, v in _tree_mtimes(out).items() if not k.endswith(LOCK)}


def test_ray_second_run_skips_finished_cells_untouched(sweeps, capsys):
    out = sweeps["ray"]["out"]
    before = _written(out)
    results_before = (out / "results.jsonl").read_text()
    code = main(["ablate", str(sweeps["path"]), "--out", str(out), "--launcher", "ray", "--jobs", "2"])
    text = capsys.readouterr().out
    assert code == 1  # the failed cells are kept (not retried) and still count
    assert "] start" not in text and "2 finished, 0 partial, 2 failed, 0 new; 0 to run" in text
    assert "failed 01-diverge/seed0" in text
    # nothing under OUT was written (but the lock), results.jsonl and cells.json included
    assert _written(out) == before
    assert (out / "results.jsonl").read_text() == results_before
    print(f"\nablate --jobs 2, 4 cells: local {sweeps['local']['seconds']:.1f} s, ray {sweeps['ray']['seconds']:.1f} s")


def test_ctrl_c_reaches_a_cell_running_in_a_ray_task(ray_instance, tmp_path):
    """Ray workers block SIGINT and a child inherits the mask: the task must unblock it for its cell,
    or the SIGINT that asks the cell to checkpoint and stop would never arrive."""
    ex = make_executor("ray", jobs=2, use_gpus=False)
    ex.open(lambda s: None)
    got, ready = tmp_path / "got", tmp_path / "ready"
    script = ("import pathlib, signal, sys, time\n"
              "signal.signal(signal.SIGINT,\n"
              "              lambda s, f: (pathlib.Path(sys.argv[1]).write_text(str(s)), sys.exit(130)))\n"
              "pathlib.Path(sys.argv[2]).write_text('ready')\n"
              "time.sleep(60)\n")
    cell = ablate.expand(ablate.parse_spec({"base": TINY_BASE, "ladder": ["a"]}), tmp_path, seeds=(0,))[0]
    ex.start(cell, ["python", "-c", script, str(got), str(ready)], tmp_path / cell.rel_dir)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        assert ex.poll(0.2) == []
    assert ready.exists(), "the cell did not start within 60 s"
    t0 = time.monotonic()
    ex.stop(30)
    assert got.read_text() == "2" and time.monotonic() - t0 < 20 and ex.running() == []
    ex.close()
