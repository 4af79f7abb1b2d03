"""Low-precision training with loss scaling (§3.2).

In fp16 small gradients underflow to 0; multiplying the loss by a scale S before backward keeps
them representable, and the gradients are divided by S (in fp32, on the fp32 master weights) before
the update. A dynamic scale is halved whenever an overflow (inf/nan gradient) is found — that step
is skipped — and grown again after a run of good steps. bf16 has fp32's exponent range and needs
no scaling: pass enabled=False for it and for fp32.
"""
from __future__ import annotations

import torch


def loss_scaler(enabled: bool, device_type: str) -> torch.amp.GradScaler:
    """A dynamic GradScaler for `device_type` ("cuda", "cpu", ...); a disabled one is a no-op."""
    return torch.amp.GradScaler(device_type, enabled=enabled)


def step_with_scaler(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float | None = None,
) -> bool:
    """backward, unscale, (optionally clip), step, update the scale. Returns True if skipped.

    The caller zeroes the gradients before the forward pass. A step is skipped exactly when the
    scaler found an inf/nan gradient; we detect it as a drop of the scale across update(), which
    only happens on overflow (growth only ever increases it). Unscaling before clipping makes
    `max_grad_norm` refer to the true gradients. With a disabled scaler this is a plain
    backward + step and never reports a skip.
    """
    if not scaler.is_enabled():
        loss.backward()
        if max_grad_norm is not None:
            _clip(optimizer, max_grad_norm)
        optimizer.step()
        return False
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if max_grad_norm is not None:
        _clip(optimizer, max_grad_norm)
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() < before


def _clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)
