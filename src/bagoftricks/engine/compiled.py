"""train.compile "step": the training step's update compiled once and, on a GPU, captured in a CUDA graph.

What is compiled (`torch.compile`, inductor, static shapes): the forward pass under the recipe's autocast
and the task's loss as one function — the model, a distillation teacher's forward (§5.3) and the loss in
one graph — whose backward AOTAutograd compiles alongside. The optimizer step is not compiled: SGD and
AdamW run torch's fused kernel (one multi-tensor kernel per param group; nothing is left to fuse), LARS,
LAMB and Muon their own step, eagerly.

Where the graph breaks, per step, in order: the lr of every param group (host floats; on a GPU a fill of a
device tensor per group) -> the task's inputs, eager (the seeded draws, the batched augmentation, mixing,
whose scalars come from a host generator) -> forward + loss + backward, compiled -> the guard, eager
(`tricks.step_with_scaler`: the non-finite check, fp16's unscale, the guarded optimizer step) -> lookahead
(every k steps) and EMA, eager. Each new input signature is a graph of its own, compiled on its first step:
an image size of progressive resizing, soft targets appearing or going when mixing stops.

On CUDA (`CapturedUpdate`) the update is captured whole: forward, loss, backward, the non-finite guard,
fp16's loss scale (scale, unscale, the scale's update) and the fused optimizer step, one CUDA graph per
input signature, recorded after CAPTURE_AFTER eager steps of that signature (lazy state, inductor's
autotuning) and replayed from then on: per step the host fills the lr tensors, copies the batch into the
graph's input tensors and launches the graph, and never waits for the device. The optimizer must skip a bad
step inside its kernel from a device flag (fused SGD and AdamW, `tricks.guarded_step.skip_mode` "flag"):
LARS, LAMB and Muon read the flag on the host or undo their step with copies, and a captured graph can do
neither, so "step" refuses them on a GPU (`capture_problem`); so it does under torchrun, where DDP's
all-reduces would have to be captured too. A replayed step runs the same kernels as the eager steps before
its capture, so a run is bit-for-bit the same whichever step it was resumed at.

`compile_seconds` is the wall time of each signature's first step (compilation) and of its capture; the
loop reports it with the evaluation (engine.setup.Training.evaluate).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import record_function
from torch.utils import _pytree as pytree

from bagoftricks import tricks
from bagoftricks.engine.derive import autocast
from bagoftricks.engine.step import TrainStep
from bagoftricks.errors import UsageError
from bagoftricks.tricks.optimizers import children

CAPTURE_AFTER = 3  # eager steps of a new input signature before it is captured (torch's CUDA-graph advice: a few)
CAPTURED_OPTIMIZERS = (torch.optim.SGD, torch.optim.AdamW)  # fused, tensor lr, the skip flag read in the kernel


def forward_loss(step: TrainStep) -> Callable[[Any], torch.Tensor]:
    """The step's forward pass under the recipe's autocast and its task's loss, as one function of the inputs."""
    task, precision, device = step.task, step.recipe.train.precision, step.device

    def fn(inputs: Any) -> torch.Tensor:
        with autocast(precision, device):
            outputs = task.forward(step.module, inputs)
        return task.loss(outputs, inputs)

    return fn


def signature(inputs: Any) -> tuple:
    """What makes a new graph: the structure of the inputs and each tensor's shape, strides and dtype."""
    leaves, spec = pytree.tree_flatten(inputs)
    return (str(spec), tuple((tuple(v.shape), v.stride(), v.dtype, str(v.device)) if isinstance(v, torch.Tensor)
                             else v for v in leaves))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _update(step: TrainStep, fn: Callable[[Any], torch.Tensor], inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """zero_grad, fn (forward + loss), then the guarded backward and optimizer step: (loss, skipped)."""
    step.optimizer.zero_grad(set_to_none=True)
    with record_function("forward+loss"):
        loss = fn(inputs)
    with record_function("backward+step"):
        skipped = tricks.step_with_scaler(step.scaler, step.optimizer, loss, reduce_flag=step.reduce_flag)
    return loss, skipped


class CompiledUpdate:
    """The update of a step with forward + loss compiled (a CPU, or any device where nothing is captured)."""

    captured = False

    def __init__(self, step: TrainStep, compile_fn: Callable | None = None):
        self.step = step
        self.fn = (compile_fn or torch.compile)(forward_loss(step), dynamic=False)
        self.seen: set[tuple] = set()
        self.compile_seconds = 0.0

    def __call__(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        key = signature(inputs)
        if key in self.seen:
            return _update(self.step, self.fn, inputs)
        t0 = time.perf_counter()
        out = _update(self.step, self.fn, inputs)
        _sync(self.step.device)
        self.compile_seconds += time.perf_counter() - t0
        self.seen.add(key)
        return out


class CudaGraphs:
    """The CUDA side of `CapturedUpdate`: eager warm-up on a side stream, capture, replay (torch's recipe for
    capturing a whole network, `torch.cuda.graph`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def warm(self, fn: Callable[[], Any]) -> Any:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = fn()
        current.wait_stream(self.stream)
        return out

    def capture(self, fn: Callable[[], Any]) -> tuple[Any, Any]:
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may call CUDA while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
        return graph, out

    def replay(self, graph: Any) -> None:
        graph.replay()

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)


class _Entry:
    """One input signature: its static input tensors, the steps it has run, and once captured its graph."""

    def __init__(self, inputs: Any):
        leaves, self.spec = pytree.tree_flatten(inputs)
        self.leaves = [v.clone() if isinstance(v, torch.Tensor) else v for v in leaves]
        self.inputs = pytree.tree_unflatten(self.leaves, self.spec)
        self.calls, self.graph, self.out = 0, None, None

    def load(self, inputs: Any) -> None:
        for static, v in zip(self.leaves, pytree.tree_leaves(inputs)):
            if isinstance(static, torch.Tensor):
                static.copy_(v, non_blocking=True)


class CapturedUpdate:
    """The update of a step captured in a CUDA graph per input signature (module docstring). `graphs` is
    `CudaGraphs(device)`; the tests give a stand-in that records and replays on the CPU."""

    captured = True

    def __init__(self, step: TrainStep, graphs: Any, compile_fn: Callable | None = None):
        problem = capture_problem(step)
        if problem:
            raise UsageError(problem)
        self.step, self.graphs = step, graphs
        self.fn = (compile_fn or torch.compile)(forward_loss(step), dynamic=False)
        self.entries: dict[tuple, _Entry] = {}
        self.compile_seconds = 0.0
        device_lrs(step.optimizer, step.device)

    def _body(self, entry: _Entry) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: _update(self.step, self.fn, entry.inputs)

    def _capture(self, entry: _Entry) -> tuple[Any, Any]:
        """Capture the entry's update. AdamW refuses a capture unless its groups say "capturable" (its fused kernel
        is the same either way); they say so only while it is captured: a replay runs no Python."""
        groups = self.step.optimizer.param_groups
        before = [g.get("capturable") for g in groups]
        for g in groups:
            g["capturable"] = True
        try:
            return self.graphs.capture(self._body(entry))
        finally:
            for g, b in zip(groups, before):
                if b is None:
                    del g["capturable"]
                else:
                    g["capturable"] = b

    def __call__(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        key = signature(inputs)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry(inputs)
        else:
            entry.load(inputs)
        entry.calls += 1
        if entry.graph is not None:
            with record_function("captured step"):
                self.graphs.replay(entry.graph)
            return entry.out[0].clone(), entry.out[1].clone()  # the graph's own tensors are rewritten next step
        t0 = time.perf_counter()
        if entry.calls <= CAPTURE_AFTER:
            out = self.graphs.warm(self._body(entry))
        else:
            entry.graph, entry.out = self._capture(entry)
            self.graphs.replay(entry.graph)  # a capture records the kernels without running them
            out = (entry.out[0].clone(), entry.out[1].clone())
        if entry.calls in (1, CAPTURE_AFTER + 1):  # compilation, capture
            self.graphs.sync()
            self.compile_seconds += time.perf_counter() - t0
        return out


def capture_problem(step: TrainStep) -> str:
    """Why the step cannot be captured in a CUDA graph ('' when it can)."""
    r = step.recipe
    if step.dinfo.enabled:
        return ("train.compile: 'step' captures a whole step in a CUDA graph, one process only; under torchrun "
                "use train.compile: model")
    for opt in children(step.optimizer):
        if not isinstance(opt, CAPTURED_OPTIMIZERS) or not tricks.skips_on_device(opt):
            return (f"train.compile: 'step' on a GPU captures the optimizer step, which needs a fused optimizer that "
                    f"skips a bad step from a device flag (optim.name: sgd or adamw); optim.name {r.optim.name!r} "
                    f"runs {type(opt).__name__}, which reads the flag on the host: use train.compile: model")
    return ""


def device_lrs(optimizer: Any, device: torch.device) -> None:
    """Every param group's lr as a 0-d tensor on `device` (fused SGD and AdamW read a tensor lr in their kernel):
    a captured step reads the lr the host fills in before each replay, not the number it was captured with.
    float32 on CUDA (what the fused kernels read, the same number they cast a float lr to), float64 elsewhere
    (the CPU kernels compute with a double lr: equal steps)."""
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    for group in optimizer.param_groups:
        lr = group["lr"]
        value = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
        group["lr"] = torch.tensor(value, dtype=dtype, device=device)


def compile_step(step: TrainStep) -> None:
    """train.compile "step": the step's update compiled (CPU) or compiled and captured (CUDA)."""
    if step.device.type == "cuda":
        step.core = CapturedUpdate(step, CudaGraphs(step.device))
    else:
        step.core = CompiledUpdate(step)


def describe(device: torch.device) -> str:
    """The run log's line on what train.compile "step" compiles on `device`."""
    what = ("forward + loss compiled by inductor as one graph per input signature, backward by AOTAutograd; "
            "the guard and the optimizer step eager")
    if device.type == "cuda":
        what += (f"; forward, loss, backward, guard and fused optimizer step captured in one CUDA graph per "
                 f"signature after {CAPTURE_AFTER} eager steps")
    return f"train.compile: step: {what}"
