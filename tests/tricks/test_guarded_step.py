import math

import torch

from bagoftricks.tricks.guarded_step import loss_scaler, step_with_scaler


def _setup():
    p = torch.nn.Parameter(torch.ones(3))
    return p, torch.optim.SGD([p], lr=0.1)


def test_overflow_skips_step_and_halves_scale():
    p, opt = _setup()
    scaler = loss_scaler(True, "cpu")
    scale0 = scaler.get_scale()
    before = p.detach().clone()
    skipped = step_with_scaler(scaler, opt, (p * float("inf")).sum())
    assert skipped.dtype == torch.bool and bool(skipped)
    assert torch.equal(p.detach(), before)          # bitwise unchanged
    assert scaler.get_scale() == scale0 / 2


def test_real_fp16_overflow_is_skipped():
    # 3000 (fine in fp16) × scale 65536 ≈ 2e8 > fp16 max 65504: the scaled backward overflows.
    p, opt = _setup()
    scaler = loss_scaler(True, "cpu")
    before = p.detach().clone()
    assert bool(step_with_scaler(scaler, opt, (p.half() * 1000).sum()))
    assert torch.equal(p.detach(), before) and scaler.get_scale() == 32768.0


def test_finite_step_is_taken_with_unscaled_gradients():
    p, opt = _setup()
    scaler = loss_scaler(True, "cpu")
    scale0 = scaler.get_scale()
    assert not bool(step_with_scaler(scaler, opt, (2 * p).sum()))
    assert torch.equal(p.grad, torch.full((3,), 2.0))   # unscaled before the step
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))
    assert scaler.get_scale() == scale0


def test_clipping_sees_true_gradient_norm():
    p, opt = _setup()
    step_with_scaler(loss_scaler(True, "cpu"), opt, (2 * p).sum(), max_grad_norm=1.0)
    # grad (2, 2, 2) has norm 2√3; clipped to norm 1 -> 1/√3 each
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 / math.sqrt(3)))


def test_disabled_scaler_is_plain_backward_and_step():
    p, opt = _setup()
    scaler = loss_scaler(False, "cpu")
    assert not scaler.is_enabled()
    assert not bool(step_with_scaler(scaler, opt, (2 * p).sum()))
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))


def _fused(p):
    from bagoftricks.tricks.optimizers import prepare_state
    return prepare_state(torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, fused=True))


def test_grads_nonfinite_flags_nan_and_inf_not_huge_values():
    from bagoftricks.tricks.guarded_step import grads_nonfinite
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1)
    for value, flagged in [(1e30, False), (3e38, False), (float("inf"), True), (float("nan"), True), (-1.0, False),
                           (float("-inf"), True)]:
        p.grad = torch.tensor([0.0, value, 1.0, 2.0])
        assert bool(grads_nonfinite(opt)) is flagged, value
        b = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))  # bf16 has fp32's range
        b.grad = torch.tensor([0.0, value, 1.0, 2.0]).to(torch.bfloat16)
        assert bool(grads_nonfinite(torch.optim.SGD([b], lr=0.1))) is flagged, (value, "bf16")
    q = torch.nn.Parameter(torch.ones(0))  # an empty gradient holds nothing to flag
    opt = torch.optim.SGD([q, p], lr=0.1)
    q.grad, p.grad = torch.ones(0), torch.ones(4)
    assert not bool(grads_nonfinite(opt))
    p.grad[3] = float("nan")
    assert bool(grads_nonfinite(opt))


def test_fused_sgd_skips_a_non_finite_first_step_on_the_device():
    """No loss scaling: a nan loss is skipped by the fused kernel; the momentum buffer stays zero
    (a fused kernel skipping the very first step would otherwise leave it uninitialised)."""
    from bagoftricks.tricks.guarded_step import skips_on_device
    p = torch.nn.Parameter(torch.ones(3))
    opt = _fused(p)
    assert skips_on_device(opt)
    skipped = step_with_scaler(loss_scaler(False, "cpu"), opt, (p * float("nan")).sum())
    assert bool(skipped) and torch.equal(p.detach(), torch.ones(3))
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.zeros(3))


def test_zeroed_momentum_then_fused_step_equals_plain_sgd():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    plain = torch.optim.SGD([b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    fused = _fused(a)
    for step in range(3):
        g = torch.randn(5)
        for p, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            loss = (p * g).sum()
            skipped = step_with_scaler(loss_scaler(False, "cpu"), opt, loss)
            assert not bool(skipped)
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), step
