"""The guarded optimizer step every precision trains with, and the loss scaler of fp16 (§3.2).

A step whose gradients (or, without loss scaling, whose loss) are not finite is skipped, leaving the
weights and the momentum untouched, in fp32, bf16 and fp16 alike. In fp16 small gradients also
underflow to 0; multiplying the loss by a scale S before backward keeps them representable, and the
gradients are divided by S (in fp32, on the fp32 master weights) before the update. A dynamic scale
is halved whenever an overflow (inf/nan gradient) is found — that step is skipped — and grown again
after a run of good steps. bf16 has fp32's exponent range and needs no scaling: pass enabled=False
for it and for fp32.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import record_function

from bagoftricks.tricks.optimizers import children


def loss_scaler(enabled: bool, device_type: str) -> torch.amp.GradScaler:
    """A dynamic GradScaler for `device_type` ("cuda", "cpu", ...); a disabled one is a no-op."""
    return torch.amp.GradScaler(device_type, enabled=enabled)


def grads_nonfinite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """0-d bool tensor on the parameters' device: does any gradient hold an inf or a nan?

    Computed on the device, without reading anything back to the host. The max-abs norm of each
    gradient is used (on a CPU its min and max), not the 2-norm, so huge but finite gradients do not
    overflow into a false alarm; a nan propagates through the max.
    """
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.bool)
    if grads[0].device.type == "cpu":
        # ATen's CPU max-abs norm is not vectorised (15 ms for ResNet-18's 11 M gradients, against
        # 1.4 ms for each tensor's min and max, which carry an inf or a nan the same way)
        ends = [torch.stack(torch.aminmax(gr)) for gr in grads if gr.numel()]
        if not ends:
            return torch.zeros((), dtype=torch.bool)
        return ~torch.isfinite(torch.cat(ends)).all()
    norms = torch._foreach_norm(grads, float("inf"))
    return ~torch.isfinite(torch.stack([n.to(grads[0].device) for n in norms])).all()


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Can `optimizer` skip a step from a device flag (``found_inf``) without a host sync?

    torch's fused optimizers (``fused=True``: SGD, Adam, AdamW) take the flag into their kernel; others
    are masked on an accelerator (`masked_step`) or read the flag on the host (free on a CPU).
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


def skip_mode(optimizer: torch.optim.Optimizer, device: torch.device) -> str:
    """How a bad step of `optimizer` is skipped: "flag" (its fused kernel reads the device flag), "mask" (an
    accelerator, the state set up: the update is undone on the device where the flag is set) or "host"
    (the flag read on the host: free on a CPU; one sync per step on an accelerator, and on the first step
    of an optimizer that sets up its state then)."""
    if skips_on_device(optimizer):
        return "flag"
    params = _stepped(optimizer)
    if device.type != "cpu" and params and all(optimizer.state.get(p) for p in params):
        return "mask"
    return "host"


def _stepped(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def masked_step(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """optimizer.step(), then its parameters and state put back where `bad` (0-d bool, on the device) is set:
    a skip decided on the device, for optimizers without a fused kernel. Costs a copy of the parameters and
    the state per step."""
    params = _stepped(optimizer)
    tensors = params + [t for p in params for t in optimizer.state[p].values() if isinstance(t, torch.Tensor)]
    saved = [t.detach().clone() for t in tensors]
    optimizer.step()
    with torch.no_grad():
        for t, old in zip(tensors, saved):
            t.copy_(torch.where(bad.to(t.device), old, t))


def _guarded(optimizer, bad: torch.Tensor) -> None:
    """One optimizer's step, skipped where `bad` is set (see skip_mode)."""
    mode = skip_mode(optimizer, bad.device)
    if mode == "flag":
        optimizer.found_inf = bad.float()  # 0-d: fused SGD takes [1] too, fused Adam/AdamW only a 0-d flag
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif mode == "mask":
        masked_step(optimizer, bad)
    elif not bool(bad):
        optimizer.step()


def step_with_scaler(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float | None = None,
    reduce_flag: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """backward, unscale, (optionally clip), a guarded step, update the scale.

    Returns a 0-d bool tensor on the device: True when the step was skipped. A step is skipped
    when a gradient is inf/nan (with fp16 loss scaling: an overflow, and the scale is halved) or,
    without loss scaling, when the loss itself is not finite; a skipped step leaves the weights and
    the optimizer state (momentum) bitwise unchanged.

    Nothing is read back to the host when the optimizer skips on the device (see :func:`skip_mode`);
    others read the flag once per step (free on a CPU). With fp16 loss scaling torch's GradScaler
    decides (it reads its flag on the host for an optimizer without a fused kernel). `reduce_flag` combines the
    flag across processes (an all-reduce max under DDP) so that every rank skips together. The
    caller zeroes the gradients before the forward pass. Unscaling before clipping makes
    `max_grad_norm` refer to the true gradients.
    """
    if scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if max_grad_norm is not None:
        _clip(optimizer, max_grad_norm)
    bad = grads_nonfinite(optimizer)
    if scaler.is_enabled():
        # the scaler skips on its own flag (set by unscale_), which is exactly `bad`; DDP's averaged
        # gradients make it the same on every rank
        with record_function("optimizer"):
            scaler.step(optimizer)
        scaler.update()
        return bad
    bad = bad | ~torch.isfinite(loss.detach()).to(bad.device)
    if reduce_flag is not None:
        bad = reduce_flag(bad)
    with record_function("optimizer"):
        for opt in children(optimizer):  # a chain (Muon + SGD): each its own way
            _guarded(opt, bad)
    return bad


def _clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)
