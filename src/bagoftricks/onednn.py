"""Which oneDNN kernels a CPU training step runs: implementation, ISA, data layout, time (`bench --kernels`).

On a CPU, PyTorch runs convolutions (and the weight reorders they need) through oneDNN, and oneDNN
names, for every primitive it executes, its implementation and the instruction set it was built
for: ``brg_conv_fwd:avx10_1_512_amx`` is a BRGEMM convolution on the AMX tiles, ``jit:avx512_core``
a JIT kernel on AVX-512 vector units, ``gemm:jit`` an im2col + GEMM fallback, ``ref`` the scalar
reference. ``ONEDNN_VERBOSE`` (switched on here for a few steps through
``torch.backends.mkldnn.verbose``) prints one line per execution with its time; this module captures
those lines and sums them by kind and implementation, so a user sees whether the convolutions of
their recipe ran on the CPU's matrix units, and what share of the step they and the reorders took.
Batch norm, activations and the optimizer run in ATen's own vectorised kernels, not oneDNN: they are
the rest of the step.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class KernelRow:
    kind: str             # convolution, reorder, matmul, ...
    implementation: str   # e.g. brg_conv_fwd:avx10_1_512_amx
    calls: int = 0
    ms: float = 0.0
    shapes: dict[str, float] = field(default_factory=dict)  # problem description -> ms


def parse(lines: list[str]) -> tuple[str, dict[tuple[str, str], KernelRow]]:
    """(the ISA line oneDNN printed, rows by (kind, implementation)) from ONEDNN_VERBOSE output (v1 format)."""
    isa, rows = "", {}
    for line in lines:
        parts = line.split(",")
        if len(parts) < 4 or parts[0] != "onednn_verbose":
            continue
        if parts[2] == "info" and len(parts) > 4 and parts[4].startswith("isa:"):
            isa = parts[4][len("isa:"):]
        if parts[2:4] != ["primitive", "exec"] or len(parts) < 11:
            continue
        kind, impl = parts[5], parts[6]
        try:
            ms = float(parts[-1])
        except ValueError:
            continue
        row = rows.setdefault((kind, impl), KernelRow(kind, impl))
        row.calls += 1
        row.ms += ms
        desc = parts[-2]
        row.shapes[desc] = row.shapes.get(desc, 0.0) + ms
    return isa, rows


def capture(step: Callable[[], None], steps: int) -> tuple[list[str], float]:
    """Run `step` `steps` times with oneDNN's verbose output on; (its lines, the steps' wall seconds)."""
    sys.stdout.flush()
    fd, path = tempfile.mkstemp(prefix="onednn-", suffix=".log")
    saved = os.dup(1)
    os.dup2(fd, 1)  # oneDNN writes to the process's stdout from C++
    try:
        t0 = time.perf_counter()
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            for _ in range(steps):
                step()
        seconds = time.perf_counter() - t0
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    try:
        with open(path) as f:
            return f.read().splitlines(), seconds
    finally:
        os.unlink(path)


def kernel_report(step: Callable[[], None], steps: int = 3) -> dict:
    """The oneDNN kernels of `steps` training steps: ISA, rows sorted by time, their share of the steps' time."""
    lines, seconds = capture(step, steps)
    isa, rows = parse(lines)
    step_ms = 1e3 * seconds / max(steps, 1)
    out = []
    for row in sorted(rows.values(), key=lambda r: -r.ms):
        top = sorted(row.shapes.items(), key=lambda kv: -kv[1])[:3]
        out.append({"kind": row.kind, "implementation": row.implementation, "calls_per_step": row.calls / steps,
                    "ms_per_step": row.ms / steps, "share_of_step": row.ms / steps / max(step_ms, 1e-9),
                    "top_shapes": [(d, ms / steps) for d, ms in top]})
    return {"isa": isa, "step_ms": step_ms, "kernels": out}


def format_kernels(rep: dict) -> str:
    lines = [f"oneDNN kernels: ISA {rep['isa'] or 'not reported'}; a step {rep['step_ms']:.1f} ms with verbose "
             f"timing on (a little slower than without)"]
    if not rep["kernels"]:
        lines.append("  none ran: ATen's own kernels did the whole step (a dtype or layout oneDNN does not take "
                     "on this CPU, such as emulated fp16)")
    for k in rep["kernels"][:12]:
        lines.append(f"  {k['kind']:<14} {k['implementation']:<34} {k['calls_per_step']:6.0f} calls "
                     f"{k['ms_per_step']:8.2f} ms  {100 * k['share_of_step']:5.1f} %")
    rest = 1.0 - sum(k["share_of_step"] for k in rep["kernels"])
    lines.append(f"  {'(not oneDNN: batch norm, activations, optimizer, ...)':<56} {100 * rest:21.1f} %")
    return "\n".join(lines)
