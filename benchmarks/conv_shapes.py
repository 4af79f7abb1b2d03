"""Where a CPU's matrix peak goes in a small ResNet: each 3x3 convolution shape alone, against a matmul.

    python benchmarks/conv_shapes.py --out benchmarks/results/conv_shapes_amx.json

For every (channels, size) of the small ResNets (ResNet-20-D at widths 16, 32 and 64: 16@28, 32@14, 64@7 px
and the wider ones), batch 128, bf16 autocast and channels-last as the recipes train: the 3x3 convolution
(stride 1, padding 1) forward alone, and forward + backward (the gradients of input and weights), and the
batch norm + ReLU that follow it in a block, forward + backward, and a copy of the conv's output (the memory
bandwidth the batch norm, a chain of passes over such tensors, is held to). Inputs and the gradients fed back are
bf16 channels-last tensors as in the network. Every workload's windows are taken in turn
with a square bf16 matmul's of about the same length (this machine's speed swings 2x within seconds), and
each convolution's FLOP/s is given as a share of the matmul's of the same moment (median over the windows).
The share is the ceiling of a network's MFU made of that layer: a ResNet-20-D step cannot use more of the
matrix units than its convolutions do, whatever happens to batch norm and the activations.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn as nn

from bagoftricks import bench
from bagoftricks.files import atomic_write_text

SHAPES = ((16, 28), (32, 14), (64, 7), (32, 28), (64, 14), (128, 7), (64, 28), (128, 14), (256, 7))


def upstream_grad(y: torch.Tensor) -> torch.Tensor:
    """The gradient the next layer's backward hands to `y`: dense, of y's dtype and memory format. (A backward
    from `y.float().sum()` hands an expanded fp32 tensor with zero strides instead, which oneDNN and ATen first copy
    or walk slowly: at 16 channels it doubles the convolution's backward and makes batch norm's several times slower
    than in a network.)"""
    g = torch.Generator().manual_seed(0)
    return torch.randn(y.shape, generator=g, dtype=y.dtype).contiguous(memory_format=torch.channels_last)


def workloads(c: int, size: int, batch: int):
    """The layer's workloads as the network runs them: bf16 channels-last activations in (the output of the
    previous batch norm + ReLU under autocast), fp32 weights cast by autocast, dense bf16 gradients back."""
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(c)
    x = (torch.randn(batch, c, size, size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
         .requires_grad_(True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x).detach().requires_grad_(True)
    g = upstream_grad(h)

    def fwd():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)

    def fwd_bwd():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.backward(g)

    def bn_relu():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.relu(bn(h))
        y.backward(g)

    def copy():
        h.detach().clone()

    return {"conv forward": fwd, "conv forward+backward": fwd_bwd, "BN+ReLU forward+backward": bn_relu,
            "copy": copy}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    cpu = torch.device("cpu")
    rows = []
    print(f"{torch.get_num_threads()} threads, batch {a.batch}, bf16, channels-last; FLOP/s as a share of a bf16 "
          f"matmul timed in turn")
    for c, size in SHAPES:
        macs = a.batch * c * c * 9 * size * size
        fns = workloads(c, size, a.batch)
        for fn in fns.values():
            for _ in range(2):
                fn()
        t_fwd = bench._once(fns["conv forward+backward"], cpu)
        peak_fn, peak_flops = bench.matmul_workload(cpu, "bf16", t_fwd)
        names = list(fns)
        timings = bench._interleaved([*fns.values(), peak_fn], cpu, 0, a.windows, a.steps)
        peaks = [peak_flops / w for w in timings[-1].runs]
        flops = {"conv forward": 2 * macs, "conv forward+backward": 6 * macs}
        row = {"channels": c, "size": size, "macs": macs, "peak_tflops": statistics.median(peaks) / 1e12,
               "peak windows flops": peaks}
        for name, t in zip(names, timings):
            row[f"{name} ms"] = t.median * 1e3
            row[f"{name} windows s"] = t.runs
            if name in flops:
                row[f"{name} share"] = statistics.median(bench.peak_shares(flops[name], t.runs, peaks))
        rows.append(row)
        bn_ms = row["BN+ReLU forward+backward ms"]
        print(f"  {c:>3} ch @ {size:>2} px: conv fwd {row['conv forward ms']:6.2f} ms "
              f"({100 * row['conv forward share']:4.1f} %), fwd+bwd {row['conv forward+backward ms']:6.2f} ms "
              f"({100 * row['conv forward+backward share']:4.1f} %), BN+ReLU fwd+bwd "
              f"{bn_ms:6.2f} ms ({bn_ms / row['copy ms']:4.1f} copies); matmul {row['peak_tflops']:.2f} TFLOP/s")
    if a.out:
        atomic_write_text(a.out, json.dumps({"threads": torch.get_num_threads(), "batch": a.batch, "rows": rows},
                                            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
