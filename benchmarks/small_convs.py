"""Convolutions with tiny outputs: oneDNN's kernels against matrix products, direction by direction.

    python benchmarks/small_convs.py --out benchmarks/results/small_convs_amx.json
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/small_convs.py        # vector units only
    python benchmarks/small_convs.py --dtype fp32

For each convolution shape of ResNet-18-D at 32 px (stages 1-4 at 8, 4, 2, 1 px and their stride-2 entries)
and of airbench's last blocks (4×4 at 19 px, 3×3 at 28 px), batch 128, channels-last: the forward, the input
gradient and the weight gradient as oneDNN computes them (``F.conv2d``, ``aten.convolution_backward`` with
one output each), against the same sums as matrix products — the forward and the weight gradient over
``im2col`` of the input (the im2col included), and for a 1×1 output the window of taps that meet the
image (what ``train.small_convs: matmul`` runs, ``models/small_conv.py``). The ratios say, shape by shape,
where the products pay; the rule in ``small_conv.small_limit`` comes from them. Windows are taken in turn
(this machine's speed swings), medians reported.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bagoftricks import bench
from bagoftricks.files import atomic_write_text
from bagoftricks.models import small_conv

# (in channels, out channels, input side, stride): ResNet-18-D at 32 px, then airbench's last blocks
SHAPES = ((64, 64, 8, 1), (64, 128, 8, 2), (128, 128, 4, 1), (128, 256, 4, 2), (256, 256, 2, 1), (256, 512, 2, 2),
          (512, 512, 1, 1), (128, 128, 2, 1), (128, 128, 3, 1), (256, 256, 3, 1), (64, 64, 7, 1))
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def workloads(ci: int, co: int, side: int, stride: int, batch: int, dtype: torch.dtype) -> dict:
    """The six timed functions of one shape: oneDNN's three directions and the products' three."""
    g0 = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(batch, ci, side, side, generator=g0).to(dtype).contiguous(memory_format=cl)
    w = torch.randn(co, ci, 3, 3, generator=g0).to(dtype).contiguous(memory_format=cl)
    y = F.conv2d(x, w, None, stride, 1)
    out = tuple(y.shape[-2:])
    g = torch.randn(y.shape, generator=g0).to(dtype).contiguous(memory_format=cl)
    s, p = (stride, stride), (1, 1)

    def onednn(mask):
        return lambda: torch.ops.aten.convolution_backward(g, x, w, None, list(s), list(p), [1, 1], False, [0, 0], 1,
                                                           mask)

    fns = {"onednn forward": lambda: F.conv2d(x, w, None, stride, 1),
           "onednn input grad": onednn([True, False, False]), "onednn weight grad": onednn([False, True, False])}
    gm = g.permute(0, 2, 3, 1).reshape(-1, co)
    wm = w.permute(0, 2, 3, 1).reshape(co, -1)
    if out == (1, 1):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

        def window_fwd():
            small_conv._WindowLinear.apply(x, w, None, p)

        def window_bwd(which):
            def fn():
                y = small_conv._WindowLinear.apply(xg, wg, None, p)
                torch.autograd.grad(y, [xg] if which == "x" else [wg], g)
            return fn
        fns.update({"product forward": window_fwd, "product input grad": window_bwd("x"),
                    "product weight grad": window_bwd("w")})
    else:
        fns.update({"product forward": lambda: small_conv._im2col(x, (3, 3), s, p, out) @ wm.t(),
                    "product weight grad": lambda: gm.t() @ small_conv._im2col(x, (3, 3), s, p, out)})
    return fns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--windows", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    cpu, dtype = torch.device("cpu"), DTYPES[a.dtype]
    print(f"{torch.get_num_threads()} threads, batch {a.batch}, {a.dtype}, channels-last; ms (oneDNN / products); "
          f"the products' path takes outputs of at most {small_conv.small_limit(dtype)} pixels here")
    rows = []
    for ci, co, side, stride in SHAPES:
        fns = workloads(ci, co, side, stride, a.batch, dtype)
        for fn in fns.values():
            fn()
        timings = dict(zip(fns, bench._interleaved(list(fns.values()), cpu, 1, a.windows, a.steps)))
        out_side = small_conv._out_size(side, 3, stride, 1)
        row = {"in": ci, "out": co, "side": side, "stride": stride, "out_pixels": out_side * out_side,
               **{f"{k} ms": t.median * 1e3 for k, t in timings.items()}}
        rows.append(row)
        parts = []
        for d in ("forward", "input grad", "weight grad"):
            o, m = row[f"onednn {d} ms"], row.get(f"product {d} ms")
            parts.append(f"{d} {o:6.2f}" + (f" / {m:6.2f} ({o / m:4.2f}x)" if m else " /      -        "))
        print(f"  {ci:>3}->{co:<3} @ {side} px s{stride} (out {out_side}x{out_side}): " + " | ".join(parts))
    if a.out:
        atomic_write_text(a.out, json.dumps({"threads": torch.get_num_threads(), "batch": a.batch, "dtype": a.dtype,
                                             "limit": small_conv.small_limit(dtype), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
