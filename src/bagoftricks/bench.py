"""`bagoftricks bench`: how fast a recipe trains, evaluates and loads data on this device.

Each measurement runs a warm-up, then several timed windows of a few steps; the median window is
reported. Model FLOP utilisation = MACs per image x 2 (FLOPs) x 3 (forward + backward) x img/s divided
by a matmul peak measured here, on the same device, in the same precision. The reference is the same
model in a plain eager fp32 loop (contiguous NCHW, no autocast, plain SGD step, data already on the
device), its timed windows taken in turn with the recipe's so that both see the same machine
state: `ratio` is how many times faster the recipe's own training step is.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from bagoftricks import models as bmodels
from bagoftricks import recipe as brecipe
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import budget, compiled, derive, runfolder, setup
from bagoftricks.errors import UsageError


@dataclass
class Timing:
    median: float
    runs: list[float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _window(fn, device, steps: int) -> float:
    """Seconds per call over `steps` calls."""
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / steps


def _windows(fn, device, warmup: int, windows: int, steps: int) -> Timing:
    """Median seconds per step over `windows` windows of `steps` calls, after `warmup` calls."""
    return _interleaved([fn], device, warmup, windows, steps)[0]


def _interleaved(fns, device, warmup: int, windows: int, steps: int) -> list[Timing]:
    """Like `_windows` for several functions, their windows taken in turn (a b a b ...), so that a
    machine that speeds up or slows down during the measurement affects all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(windows):
        for fn, r in zip(fns, runs):
            r.append(_window(fn, device, steps))
    return [Timing(statistics.median(r), r) for r in runs]


def matmul_workload(device: torch.device, precision: str, seconds: float,
                    n: int = 0) -> tuple[Callable[[], None], float]:
    """A square matmul in the run's precision (bf16/fp16 use that dtype), repeated to last about `seconds`:
    (the call, its FLOPs). Timed in turn with the training step, it gives the peak of the same moment."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # no fast fp16 GEMM on CPU: its peak would understate utilisation
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    _once(lambda: torch.mm(a, b), device)  # first call: oneDNN/cuBLAS pick and prepare their kernel
    reps = max(1, round(seconds / max(_once(lambda: torch.mm(a, b), device), 1e-6)))

    def fn():
        for _ in range(reps):
            torch.mm(a, b)

    return fn, 2.0 * n ** 3 * reps


def _once(fn, device) -> float:
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def peak_shares(flops: float, window_seconds: list[float], peaks: list[float]) -> list[float]:
    """Window by window, the FLOP/s of a workload of `flops` per call as a share of the matmul FLOP/s measured in
    the window taken next to it (windows in turn): the MFU of each pair; its median is the one reported."""
    return [flops / w / p for w, p in zip(window_seconds, peaks)]


def training_step(r: brecipe.Recipe, device: torch.device, dinfo: bdist.DistInfo):
    """The recipe's `Training` (compiled and wrapped as `train.compile` says, in train mode), a function that runs
    its training step on the next batch of its own training data (epoch 0, steps 0, 1, 2, ...), and that data's
    first batch."""
    t = setup.setup_training(r, device, dinfo)
    setup.wrap_for_training(t)
    batches = _cycle(t.data.train)
    first = next(batches)
    counter = [0]

    def train_step():
        with record_function("data+augment"):
            x, y = next(batches)
        t.step((x, y), 0, counter[0] % t.steps_per_epoch)
        counter[0] += 1

    t.step.module.train()
    return t, train_step, first


def run_bench(r: brecipe.Recipe, *, warmup: int = 3, windows: int = 5, steps: int = 5, reference: bool = True,
              loader: bool = True, profile_steps: int = 0, trace: str = "", kernel_steps: int = 0) -> dict:
    """Time the recipe's own training step (the engine's `TrainStep`), evaluation and loader.

    The step runs as in training (lr schedule, seeded generators, every per-step trick) over batches
    from the recipe's own training data, epoch 0, steps 0, 1, 2, ...
    """
    brecipe.validate(r)
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    dinfo = bdist.DistInfo()
    device = derive.resolve_device(r.train.device, dinfo.local_rank)
    r = derive.resolve_precision(r, device)
    t, train_step, (x0, y0) = training_step(r, device, dinfo)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # train.compile "step": a signature's first step compiles it; on a GPU the one after CAPTURE_AFTER captures it
        for _ in range(max(warmup, 1) + (compiled.CAPTURE_AFTER + 1 if r.train.compile == "step" else 0)):
            train_step()
        _sync(device)
        peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_bytes()
        # the recipe and the plain fp32 reference take their timed windows in turn: the ratio compares
        # them on the same machine state (a shared CPU's speed drifts by tens of percent over minutes)
        # the matmul peak takes its windows in turn with them too, each about as long as a training step: this
        # machine's speed can swing 2x within seconds, and a peak from another moment would make the MFU of a slow
        # window look low (or, from a slow moment, a fast window's look high). The MFU is the median over windows.
        fns = [train_step]
        if reference:
            fns.append(_reference_step(r, t.data, device, x0, y0))
            for _ in range(warmup):
                fns[-1]()
        peak_fn, peak_flops = matmul_workload(device, r.train.precision, _once(train_step, device))
        timings = _interleaved([*fns, peak_fn], device, 0, windows, steps)  # all are warm now
        peaks = [peak_flops / w for w in timings[-1].runs]
        prof = profile(train_step, device, profile_steps, trace) if profile_steps else None
        kernels = _kernels(train_step, device, kernel_steps) if kernel_steps else None
        size = (budget.epoch_size(r, 0),) * 2  # the timed steps are epoch 0's: progressive resizing's first size
        out = _results(r, t, device, size, timings[0], _eval_timing(r, t, x0, warmup, windows, steps),
                       _loader_timing(t, windows, steps) if loader else None, peaks, peak_mem)
        if prof is not None:
            out["profile"] = dict(prof, mfu_by_phase=_phase_mfu(prof, out))
        out["launches"] = launch_stats(train_step, device, steps)
        if t.step.core is not None:
            out.update(compile_seconds=t.step.core.compile_seconds, captured=t.step.core.captured)
        if kernels is not None:
            out["kernels"] = kernels
        if reference:
            ref = x0.shape[0] / timings[1].median
            out.update(reference_img_s=ref, reference_windows_s=timings[1].runs, ratio=out["train_img_s"] / ref)
        slow = derive.precision_note(r.train.precision, device)  # what a run of the recipe warns about its speed
        if slow:
            out["warnings"] = [slow]
        return out
    finally:
        t.close()  # a per-image loader's workers (left to the garbage collector: 5 s each)


def _eval_timing(r: brecipe.Recipe, t: setup.Training, x0: torch.Tensor, warmup: int, windows: int,
                 steps: int) -> Timing:
    bs, eval_bs = r.train.batch_size, derive.eval_batch_size(r)
    xe = x0.repeat((eval_bs + bs - 1) // bs, 1, 1, 1)[:eval_bs]
    if r.train.channels_last:
        xe = xe.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def eval_step():
        with derive.autocast(r.train.precision, t.device):
            t.model(xe)

    t.model.eval()
    timing = _windows(eval_step, t.device, max(1, warmup // 2), windows, steps)
    t.model.train()
    return timing


def _loader_timing(t: setup.Training, windows: int, steps: int) -> Timing:
    fresh = _cycle(t.data.train)
    return _windows(lambda: next(fresh), t.device, 2, windows, steps)


def _results(r: brecipe.Recipe, t: setup.Training, device: torch.device, size: tuple[int, int], t_train: Timing,
             t_eval: Timing, t_load: Timing | None, peaks: list[float], peak_mem: int) -> dict:
    """The numbers of one bench; `size`: (H, W) of the timed batches, which is not `data.image_size` where
    progressive resizing starts smaller (the MACs, and so the MFU, are counted at the size that ran);
    `peaks`: the matmul FLOP/s of each window, taken in turn with `t_train`'s."""
    tr, data = r.train, t.data
    _, macs = bmodels.count_params_macs(derive.recipe_model(r, data.num_classes, data.in_channels),
                                        (data.in_channels, *size))
    train_ips = tr.batch_size / t_train.median
    mfus = peak_shares(2 * macs * 3 * tr.batch_size, t_train.runs, peaks)
    return {
        "device": str(device), "device_name": runfolder.device_name(device), "arch": r.model.arch,
        "variant": r.model.variant, "precision": tr.precision, "channels_last": tr.channels_last,
        "compile": tr.compile, "batch_size": tr.batch_size, "threads": torch.get_num_threads(),
        # train.small_convs as it ran: "matmul" only where the engine swapped the convolutions (CPU, no compile)
        "small_convs": "matmul" if any(isinstance(m, bmodels.SmallConv2d) for m in t.model.modules()) else "native",
        "in_memory_data": data.in_memory,
        "train_img_s": train_ips, "eval_img_s": derive.eval_batch_size(r) / t_eval.median,
        "loader_img_s": (tr.batch_size / t_load.median) if t_load else None,
        "image_size": list(size), "peak_memory_bytes": peak_mem, "macs_per_image": macs,
        "matmul_peak_flops": statistics.median(peaks),
        "mfu": statistics.median(mfus), "mfu_windows": mfus, "matmul_peak_windows_flops": peaks,
        "train_windows_s": t_train.runs,
    }


# Operator categories for the profile, first match wins (names as torch.profiler reports them).
CATEGORIES = (
    ("convolution", ("conv", "cudnn", "mkldnn_convolution")),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("matmul (linear)", ("addmm", "aten::mm", "matmul", "linear", "bmm")),
    ("activation", ("relu", "threshold", "silu", "gelu", "sigmoid", "hardswish", "mish", "clamp")),
    ("pooling", ("pool",)),
    ("optimizer", ("sgd", "foreach", "optimizer", "momentum")),
    ("loss", ("softmax", "nll", "cross_entropy", "log_", "logsumexp")),
    ("elementwise/copies", ("add", "mul", "sub", "div", "copy", "_to_copy", "fill", "zero", "where", "lerp",
                            "cat", "stack", "index", "contiguous", "clone", "empty", "resize")),
)
PHASES = ("data+augment", "forward+loss", "backward+step")
NESTED = {"optimizer": "backward+step"}  # a phase inside another: the optimizer's step (tricks.guarded_step)


def _category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def profile(step, device: torch.device, steps: int, trace: str = "") -> dict:
    """Where a training step's time goes: `steps` steps under torch.profiler.

    Returns milliseconds per step by phase (data+augment, forward+loss, backward+step: wall time,
    children included) and by operator category (self time, on the GPU when there is one), plus the
    top operators. `trace` also writes a Chrome trace (open in chrome://tracing or Perfetto).
    """
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler back-end's start/stop chatter off stderr
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tprofile(activities=acts) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    if trace:
        prof.export_chrome_trace(trace)
    on_gpu = device.type == "cuda"
    phases = dict.fromkeys([*PHASES, *NESTED], 0.0)
    cats: dict[str, float] = {}
    ops = []
    for ev in prof.key_averages():
        if ev.key in phases:
            phases[ev.key] = ev.cpu_time_total / 1e3 / steps
            continue
        if on_gpu:  # torch < 2.4 names it self_cuda_time_total
            self_us = getattr(ev, "self_device_time_total", None) or getattr(ev, "self_cuda_time_total", 0) or 0
        else:
            self_us = ev.self_cpu_time_total
        if self_us <= 0 or ev.key.startswith("ProfilerStep"):
            continue
        ms = self_us / 1e3 / steps
        cats[_category(ev.key)] = cats.get(_category(ev.key), 0.0) + ms
        ops.append((ev.key, ms))
    ops.sort(key=lambda kv: -kv[1])
    return {"steps": steps, "clock": "device self time" if on_gpu else "cpu self time",
            "phases_ms": phases, "categories_ms": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
            "top_ops_ms": ops[:10]}


def format_profile(prof: dict) -> str:
    lines = [f"profile: {prof['steps']} steps, ms per step"]
    ph = prof["phases_ms"]
    total_ph = sum(ph.get(k, 0.0) for k in PHASES) or 1.0
    for k in PHASES:
        lines.append(f"  phase {k:<20} {ph.get(k, 0.0):8.2f}  {100 * ph.get(k, 0.0) / total_ph:5.1f} %")
    for k, outer in NESTED.items():
        if k in ph:
            lines.append(f"  phase   {k:<18} {ph[k]:8.2f}  {100 * ph[k] / (ph.get(outer) or 1.0):5.1f} % of {outer}")
    for k, v in prof.get("mfu_by_phase", {}).items():
        lines.append(f"  mfu   {k:<20} {100 * v:8.1f} %  (of the measured matmul peak)")
    total = sum(prof["categories_ms"].values()) or 1.0
    for k, v in prof["categories_ms"].items():
        lines.append(f"  ops   {k:<20} {v:8.2f}  {100 * v / total:5.1f} %  ({prof['clock']})")
    for k, v in prof["top_ops_ms"][:5]:
        lines.append(f"  top   {k[:40]:<40} {v:8.2f}")
    return "\n".join(lines)


def _kernels(train_step, device: torch.device, steps: int) -> dict:
    """bench --kernels: the oneDNN kernels (implementation, ISA) of a few steps, and the CPU's capability."""
    if device.type != "cpu":
        return {"note": "oneDNN kernels are a CPU's; on a GPU use --profile"}
    from bagoftricks.onednn import kernel_report
    return dict(kernel_report(train_step, steps), cpu_capability=torch.backends.cpu.get_cpu_capability())


def _phase_mfu(prof: dict, res: dict) -> dict:
    """MFU of the forward (2·MACs per image) and of the backward with the optimizer (4·MACs: the gradients of
    the activations and of the weights), each over its own phase time, against the measured matmul peak."""
    ph, images = prof["phases_ms"], res["batch_size"]
    flops = {"forward+loss": 2 * res["macs_per_image"] * images, "backward+step": 4 * res["macs_per_image"] * images}
    return {k: f / (ph[k] / 1e3) / res["matmul_peak_flops"] for k, f in flops.items() if ph.get(k)}


# CUDA runtime calls, by what they mean for a launch-bound step (names as the profiler records them)
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                "cudaLaunchCooperativeKernel")
GRAPH_CALLS = ("cudaGraphLaunch", "cuGraphLaunch")
WAIT_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cuStreamSynchronize",
              "cuCtxSynchronize", "cudaMemcpy")
GPU_ONLY = "GPU-only: kernel launches and the host's waits are counted on a CUDA device"


def launch_stats(train_step, device: torch.device, steps: int) -> dict:
    """Per training step on a GPU: the kernels launched one by one and as CUDA graphs, the kernels the GPU ran,
    the milliseconds the host spent waiting for the device (synchronising calls) and the GPU's busy fraction:
    a launch-bound step shows many launches and a GPU mostly idle. On a CPU: {"note": GPU_ONLY}."""
    if device.type != "cuda":
        return {"note": GPU_ONLY}
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("bench:steps"):
            for _ in range(steps):
                train_step()
        _sync(device)
    gpu = torch.autograd.DeviceType.CUDA
    events = [(e.name, e.device_type == gpu, e.time_range.start, e.time_range.end) for e in prof.events()]
    return summarise_launches(events, steps)


def summarise_launches(events: list[tuple[str, bool, float, float]], steps: int) -> dict:
    """`launch_stats` from profiler events (name, on the GPU, start µs, end µs): host calls inside the
    "bench:steps" range, GPU kernels from its start to the last kernel's end."""
    window = [(a, b) for name, on_gpu, a, b in events if name == "bench:steps" and not on_gpu]
    if not window:
        raise ValueError("no 'bench:steps' range among the profiler's events")
    t0, t1 = window[0]
    host = [(n, a, b) for n, g, a, b in events if not g and t0 <= a <= t1]
    kernels = sorted((a, b) for n, g, a, b in events if g and b >= t0)
    busy, end, last = 0.0, t0, t1
    for a, b in kernels:  # the union of the kernels' intervals
        a = max(a, end)
        if b > a:
            busy, end = busy + b - a, b
        last = max(last, b)
    count = lambda names: sum(n in names for n, _, _ in host) / steps  # noqa: E731
    return {"kernel_launches_per_step": count(LAUNCH_CALLS), "graph_launches_per_step": count(GRAPH_CALLS),
            "kernels_per_step": len(kernels) / steps,
            "host_wait_ms_per_step": sum(b - a for n, a, b in host if n in WAIT_CALLS) / 1e3 / steps,
            "host_ms_per_step": (t1 - t0) / 1e3 / steps, "gpu_busy": busy / max(last - t0, 1e-9)}


def format_launches(s: dict) -> str:
    if "note" in s:
        return s["note"]
    return (f"{s['kernel_launches_per_step']:.1f} kernel launches + {s['graph_launches_per_step']:.1f} graph launches "
            f"per step ({s['kernels_per_step']:.1f} kernels run); host waits {s['host_wait_ms_per_step']:.2f} of "
            f"{s['host_ms_per_step']:.2f} ms per step; GPU busy {100 * s['gpu_busy']:.0f} %")


def _reference_step(r, data, device, x0, y0):
    """One step of the same architecture in a plain eager fp32 loop: what a hand-written script does."""
    torch.manual_seed(r.train.seed)
    model = derive.recipe_model(r, data.num_classes, data.in_channels).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = x0.float().contiguous()
    y = y0

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _cycle(source):
    epoch = 0
    while True:
        yield from source.epoch(epoch)
        epoch += 1


def _rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def format_table(res: dict) -> str:
    rows = [
        ("device", f"{res['device']} ({res['device_name']}), {res['threads']} threads"),
        ("model", f"{res['arch']}-{res['variant']}, batch {res['batch_size']} at "
                  f"{'x'.join(map(str, res['image_size']))} px, {res['precision']}"
                  f"{', channels_last' if res['channels_last'] else ''}"
                  f"{'' if res['compile'] == 'none' else ', compile ' + res['compile']}"
                  f"{', small convs as matrix products' if res.get('small_convs') == 'matmul' else ''}"),
        ("train", f"{res['train_img_s']:.0f} img/s"),
        ("eval", f"{res['eval_img_s']:.0f} img/s"),
    ]
    if res.get("loader_img_s") is not None:
        rows.append(("data loader", f"{res['loader_img_s']:.0f} img/s "
                                    f"({'in-memory batched' if res['in_memory_data'] else 'per-image workers'})"))
    peak = res["matmul_peak_flops"] / 1e12
    rows += [("peak memory", f"{res['peak_memory_bytes'] / 2**20:.0f} MiB"),
             ("MFU", f"{100 * res['mfu']:.1f} % of the matmul peak measured in turn with the step "
                    f"(median {peak:.2f} TFLOP/s; windows {min(res['mfu_windows']) * 100:.1f}-"
                    f"{max(res['mfu_windows']) * 100:.1f} %)")]
    if "launches" in res:
        rows.append(("launches", format_launches(res["launches"])))
    if res.get("compile_seconds") is not None:
        rows.append(("compile", f"{res['compile_seconds']:.1f} s to compile{' and capture' if res['captured'] else ''} "
                                f"(the first steps; not in the img/s)"))
    if "ratio" in res:
        rows.append(("reference", f"{res['reference_img_s']:.0f} img/s (plain eager fp32 loop)"))
        rows.append(("ratio", f"{res['ratio']:.2f}x"))
    rows += [("warning", note) for note in res.get("warnings", ())]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def cmd_bench(args) -> int:
    if args.profile < 0:
        raise UsageError(f"bench: --profile N must be >= 0 (0 = no profile), got {args.profile}")
    if args.kernels < 0:
        raise UsageError(f"bench: --kernels N must be >= 0 (0 = none), got {args.kernels}")
    if args.trace and not args.profile:
        raise UsageError("bench: --trace FILE needs --profile N (the steps to trace)")
    r = brecipe.load(args.recipe, args.overrides)
    res = run_bench(r, warmup=args.warmup, windows=args.windows, steps=args.steps, reference=not args.no_reference,
                    loader=not args.no_loader, profile_steps=args.profile, trace=args.trace,
                    kernel_steps=args.kernels)
    print(format_table(res))
    if "profile" in res:
        print(format_profile(res["profile"]))
    if "kernels" in res:
        from bagoftricks.onednn import format_kernels
        print(format_kernels(res["kernels"]))
    print(json.dumps(res))
    return 0
