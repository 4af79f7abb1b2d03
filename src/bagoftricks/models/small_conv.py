"""Convolutions with tiny outputs as matrix products on a CPU (``train.small_convs: matmul``).

oneDNN's convolution kernels block their work over the output's rows; when a 3×3 convolution's
output is only a few pixels wide — the last stages of a ResNet at 32 px (2×2, 1×1), airbench's last
block (4×4 and 2×2 at 20 px, 3×3 at 28 px) — those blocks hold one to four rows and the matrix units
stay nearly empty. The weight gradient suffers most: on an AMX Xeon it ran 2–12× slower than the same
sum written as one matrix product (``benchmarks/small_convs.py`` times each shape). Here:

* output 1×1: the convolution is a linear map of the input pixels its window covers (the other taps
  only ever see padding), so forward and both gradients are matrix products of those taps alone;
* a few output pixels (``small_limit``): forward and input gradient stay oneDNN's, the weight
  gradient is ``dY^T @ im2col(X)``;
* anything else: ``nn.Conv2d`` unchanged.

The results equal the convolution's up to the order of the sums (the tests compare both ways).
``SmallConv2d`` is an ``nn.Conv2d`` with the same parameters and state-dict keys, so checkpoints,
exports and other libraries see a plain convolution.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SmallConv2d", "small_limit", "use_small_convs"]


def small_limit(dtype: torch.dtype) -> int:
    """Most output pixels (H × W) whose weight gradient is taken as a matrix product.

    Measured (``benchmarks/small_convs.py``): with bf16 on AMX tiles, oneDNN's weight-gradient kernel
    is slower up to 4×4 outputs; on AVX-512 BF16 vector units and in fp32 only up to 2×2. (On an AMD EPYC's
    AVX-512 BF16 the products also won at 3×3 and 4×4 alone, 1.03–1.99×, but a whole ResNet-18-D or
    airbench step with 16 was 0.97–1.00× the step with 4: 4 is kept there.)
    """
    if dtype == torch.bfloat16 and _amx_usable():  # (fp16: AMX-BF16 tiles do not take it)
        return 16
    return 4


@functools.cache  # asked at every small convolution's call; oneDNN, too, reads its ISA cap once per process
def _amx_usable() -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if cap and "AMX" not in cap and cap not in ("ALL", "DEFAULT"):
        return False  # oneDNN held below AMX: its kernels and matmuls run on vector units
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _im2col(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
            out: tuple[int, int]) -> torch.Tensor:
    """(N·OH·OW, KH·KW·C): each output pixel's window, taps outer and channels inner (NHWC order)."""
    n, c = x.shape[:2]
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, p[1], p[1], p[0], p[0]))
    oh, ow = out
    taps = [xp[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1]]
            for i in range(k[0]) for j in range(k[1])]
    return torch.cat(taps, dim=3).reshape(n * oh * ow, k[0] * k[1] * c)


class _WeightGradAsMatmul(torch.autograd.Function):
    """y = conv2d(x, w, b) by oneDNN; dL/dx and dL/db by oneDNN; dL/dw = dY^T @ im2col(x)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, b is not None
        return F.conv2d(x, w, b, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x or need_b:
            gx, _, gb = torch.ops.aten.convolution_backward(
                g, x, w, [w.shape[0]] if ctx.has_bias else None, list(ctx.stride), list(ctx.padding), [1, 1],
                False, [0, 0], 1, [need_x, False, need_b])
        if need_w:
            o, c, kh, kw = w.shape
            cols = _im2col(x, (kh, kw), ctx.stride, ctx.padding, tuple(g.shape[-2:]))
            gm = g.permute(0, 2, 3, 1).reshape(-1, o)
            gw = (gm.t() @ cols).reshape(o, kh, kw, c).permute(0, 3, 1, 2)
        return gx, gw, gb, None, None


class _WindowLinear(torch.autograd.Function):
    """A convolution with a 1×1 output as a linear map of the taps that fall inside the image; the
    other taps only meet padding, so their weight gradient is zero."""

    @staticmethod
    def forward(ctx, x, w, b, padding):
        n, c = x.shape[:2]
        o = w.shape[0]
        r, q = min(w.shape[2] - padding[0], x.shape[2]), min(w.shape[3] - padding[1], x.shape[3])
        xs = x[:, :, :r, :q].permute(0, 2, 3, 1).reshape(n, r * q * c)
        ws = w[:, :, padding[0]:padding[0] + r, padding[1]:padding[1] + q].permute(0, 2, 3, 1).reshape(o, r * q * c)
        ctx.save_for_backward(xs, ws)
        ctx.padding, ctx.window, ctx.x_shape, ctx.w_shape = padding, (r, q), x.shape, w.shape
        ctx.w_channels_last = w.is_contiguous(memory_format=torch.channels_last)
        y = torch.empty((n, o, 1, 1), dtype=xs.dtype)  # written through a 2-d view: the output is no view, so
        if b is None:                                    # in-place ops after it (ReLU(inplace)) are allowed
            torch.mm(xs, ws.t(), out=y.view(n, o))
        else:
            torch.addmm(b, xs, ws.t(), out=y.view(n, o))
        return y

    @staticmethod
    def backward(ctx, g):
        xs, ws = ctx.saved_tensors
        n, c, h, wd = ctx.x_shape
        o, _, kh, kw = ctx.w_shape
        r, q = ctx.window
        gm = g.reshape(n, o)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            win = (gm @ ws).reshape(n, r, q, c).permute(0, 3, 1, 2)
            if (r, q) == (h, wd):
                gx = win
            else:
                gx = torch.zeros((n, h, wd, c), dtype=win.dtype).permute(0, 3, 1, 2)
                gx[:, :, :r, :q] = win
        if ctx.needs_input_grad[1]:
            win = (gm.t() @ xs).reshape(o, r, q, c).permute(0, 3, 1, 2)
            if (r, q) == (kh, kw):
                gw = win
            else:  # the taps outside the window only ever met padding
                gw = torch.zeros((o, kh, kw, c), dtype=win.dtype).permute(0, 3, 1, 2) if ctx.w_channels_last \
                    else torch.zeros(ctx.w_shape, dtype=win.dtype)
                p0, p1 = ctx.padding
                gw[:, :, p0:p0 + r, p1:p1 + q] = win
        if ctx.needs_input_grad[2]:
            gb = gm.sum(0)
        return gx, gw, gb, None


class SmallConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose tiny-output calls on a CPU run as matrix products (see the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4:
            return super().forward(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        out = (_out_size(x.shape[-2], k[0], s[0], p[0]), _out_size(x.shape[-1], k[1], s[1], p[1]))
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        pixels = out[0] * out[1]
        if pixels > small_limit(dtype):
            return super().forward(x)
        xc, wc = x.to(dtype), self.weight.to(dtype)
        bc = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            if pixels == 1:
                return _WindowLinear.apply(xc, wc, bc, p)
            return _WeightGradAsMatmul.apply(xc, wc, bc, s, p)


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and all(pp < kk for pp, kk in zip(m.padding, m.kernel_size)))


def use_small_convs(model: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d`` of ``model`` that can take the matrix-product path (groups 1, no
    dilation, zero padding smaller than the kernel) into a ``SmallConv2d``,
    in place: same parameters, same state dict. Returns how many were changed."""
    changed = 0
    for m in model.modules():
        if _eligible(m):
            m.__class__ = SmallConv2d
            changed += 1
    return changed
