"""train.small_convs: convolutions with outputs of a few pixels as matrix products (models/small_conv.py).

The matrix-product path must be the same function as the convolution — forward, input gradient,
weight gradient and bias gradient — in every layout and precision the engine uses, and it must only
be taken where it was measured to pay (benchmarks/small_convs.py)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bagoftricks.models import SmallConv2d, build_model, use_small_convs
from bagoftricks.models import small_conv

# (in, out, kernel, stride, padding, input side, bias): 1×1 outputs (the window), 2×2 and 3×3 outputs
# (the weight gradient as a product), a 1×1 kernel, a window cut by the image (2×2 input, stride 2)
SHAPES = [
    (6, 5, 3, 1, 1, 1, False), (6, 5, 3, 2, 1, 2, True), (6, 5, 3, 2, 1, 1, False), (6, 5, 1, 1, 0, 1, True),
    (6, 5, 3, 1, 1, 2, True), (6, 5, 3, 2, 1, 4, False), (6, 5, 3, 1, 1, 3, False), (6, 5, 1, 1, 0, 2, False),
    (6, 5, 5, 1, 2, 2, False), (6, 5, 5, 3, 2, 4, True),
]


def _pair(ci, co, k, s, p, bias, dtype=torch.float64):
    torch.manual_seed(0)
    ref = nn.Conv2d(ci, co, k, s, p, bias=bias).to(dtype)
    fast = copy.deepcopy(ref)
    assert use_small_convs(fast) == 1 and type(fast) is SmallConv2d
    return ref, fast


def _run(m, x, g, autocast=None):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        y = m(x)
    y.backward(g.to(y.dtype))
    grads = [x.grad] + [p.grad for p in m.parameters()]
    for p in m.parameters():
        p.grad = None
    return y, grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_product_path_is_the_convolution_in_float64(shape, channels_last, monkeypatch):
    monkeypatch.setattr(small_conv, "small_limit", lambda dtype: 16)  # every shape here takes the path
    ci, co, k, s, p, side, bias = shape
    ref, fast = _pair(ci, co, k, s, p, bias)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, fast = ref.to(memory_format=fmt), fast.to(memory_format=fmt)
    x = torch.randn(3, ci, side, side, dtype=torch.float64).contiguous(memory_format=fmt)
    g = torch.randn(ref(x).shape, dtype=torch.float64)
    y0, g0 = _run(ref, x, g)
    y1, g1 = _run(fast, x, g)
    assert y1.grad_fn is not None and "ConvolutionBackward" not in type(y1.grad_fn).__name__
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the accumulated gradient has the weight's layout
    assert g1[1].is_contiguous(memory_format=fmt) and fast.weight.is_contiguous(memory_format=fmt)
    assert torch.autograd.gradcheck(lambda x, w: small_conv._WindowLinear.apply(x, w, None, (p, p))
                                    if small_conv._out_size(side, k, s, p) == 1
                                    else small_conv._WeightGradAsMatmul.apply(x, w, None, (s, s), (p, p)),
                                    (x[:1].detach().requires_grad_(), fast.weight.detach().requires_grad_()))


@pytest.mark.parametrize("side", [1, 2, 4])
def test_bf16_autocast_gives_the_convolutions_dtypes_and_values(side):
    ref, fast = _pair(16, 32, 3, 1, 1, True, dtype=torch.float32)
    ref, fast = ref.to(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last)
    x = torch.randn(8, 16, side, side).contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, 32, side, side)
    y0, g0 = _run(ref, x, g, autocast=torch.bfloat16)
    y1, g1 = _run(fast, x, g, autocast=torch.bfloat16)
    assert y1.dtype == y0.dtype == torch.bfloat16
    torch.testing.assert_close(y1, y0, rtol=2e-2, atol=2e-2)
    for a, b in zip(g1, g0):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


def test_only_tiny_outputs_leave_onednn(monkeypatch):
    monkeypatch.setattr(small_conv, "small_limit", lambda dtype: 4)
    _, fast = _pair(4, 4, 3, 1, 1, False, dtype=torch.float32)
    names = {side: type(fast(torch.randn(2, 4, side, side, requires_grad=True)).grad_fn).__name__
             for side in (1, 2, 3, 8)}
    assert names[1].startswith("_WindowLinear") and names[2].startswith("_WeightGradAsMatmul")
    assert names[3] == names[8] == "ConvolutionBackward0"  # 9 and 64 output pixels: over the limit
    with torch.no_grad():  # no gradient: the same numbers, without a graph
        x = torch.randn(2, 4, 2, 2)
        torch.testing.assert_close(fast(x), F.conv2d(x, fast.weight, None, 1, 1))


@pytest.fixture
def _fresh_isa_answer():
    """small_conv caches whether AMX is usable (per process, as oneDNN reads its cap); each setting here asks anew,
    and the cache holds no patched answer afterwards."""
    small_conv._amx_usable.cache_clear()
    yield small_conv._amx_usable.cache_clear
    small_conv._amx_usable.cache_clear()


def test_the_limit_follows_the_matrix_units(monkeypatch, _fresh_isa_answer):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert small_conv.small_limit(torch.bfloat16) == 16
    assert small_conv.small_limit(torch.float32) == small_conv.small_limit(torch.float16) == 4
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # oneDNN held below AMX
    _fresh_isa_answer()
    assert small_conv.small_limit(torch.bfloat16) == 4
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    _fresh_isa_answer()
    assert small_conv.small_limit(torch.bfloat16) == 16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    _fresh_isa_answer()
    assert small_conv.small_limit(torch.bfloat16) == 4


def test_use_small_convs_keeps_the_state_dict_and_skips_what_it_cannot_do():
    model = build_model("resnet18", 10, in_channels=1, variant="D")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = sum(type(m) is nn.Conv2d for m in model.modules())
    assert use_small_convs(model) == plain > 0
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    odd = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                        nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                        nn.Conv2d(4, 4, 3, padding=3))
    assert use_small_convs(odd) == 0 and all(type(m) is nn.Conv2d for m in odd)


def test_a_resnet_at_32_px_trains_the_same_through_both_paths():
    """ResNet-18-D at 32 px ends at 1×1 (stage 4) and 2×2 (stage 3): one fp64 SGD step through the
    products moves every weight as oneDNN's convolutions do."""
    torch.manual_seed(0)
    ref = build_model("resnet18", 10, in_channels=1, variant="D").double()
    fast = copy.deepcopy(ref)
    use_small_convs(fast)
    x, y = torch.randn(4, 1, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    for m in (ref, fast):
        F.cross_entropy(m(x), y).backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)
