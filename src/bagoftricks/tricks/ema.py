"""Exponential moving average of the weights (not in the paper; a common companion trick).

Evaluating an average of the recent iterates smooths out the noise of the last SGD steps, which
typically gives a small accuracy gain for free and is most useful with short schedules or without
a decay to ~0 at the end. Off when tricks.ema_decay = 0 (the engine then never builds this).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / DataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


class ModelEMA:
    """fp32 shadow copy of a model's parameters and buffers.

    update(model, decay): for every parameter  ema ← decay·ema + (1-decay)·p  (in fp32, so the
    average does not lose the small (1-decay)·p increments when the model runs in fp16/bf16);
    buffers (BN running stats, counters) are copied, since they are already running averages.

    Decay warm-up (optional, `warmup=True`): the decay actually used at the n-th update (n = 0, 1,
    ...) is min(decay, (1+n)/(10+n)), so the first updates track the fast-moving weights instead
    of averaging in the random initialisation for ~1/(1-decay) steps (the TensorFlow
    ExponentialMovingAverage `num_updates` rule). Default off: update() then uses `decay` as given.
    """

    def __init__(self, model: nn.Module, warmup: bool = False, device: torch.device | str | None = None) -> None:
        model = unwrap(model)
        self.warmup = warmup
        self.num_updates = 0
        self.params = {n: self._copy(p, device) for n, p in model.named_parameters()}
        self.buffers = {n: self._copy(b, device) for n, b in model.named_buffers()}

    @staticmethod
    def _copy(t: torch.Tensor, device) -> torch.Tensor:
        t = t.detach().to(device) if device is not None else t.detach()
        return t.float().clone() if t.is_floating_point() else t.clone()

    def effective_decay(self, decay: float) -> float:
        if self.warmup:
            return min(decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return decay

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float, skip: torch.Tensor | None = None) -> float:
        """One EMA step from the current weights of `model`; returns the decay used.

        `skip` (a 0-d bool tensor, e.g. the engine's skipped-step flag) leaves the averaged
        parameters unchanged when True, decided on the device without a host sync.
        """
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        model = unwrap(model)
        d = self.effective_decay(decay)
        keep = None if skip is None else (~skip).float()
        for n, p in model.named_parameters():
            e = self.params[n]
            w = p.detach().to(e.device, torch.float32)
            if keep is None:
                e.mul_(d).add_(w, alpha=1.0 - d)
            else:  # e + (1-d)·keep·(w - e): e·d + (1-d)·w when kept, e when skipped
                e.add_((w - e).mul_(keep.to(e.device) * (1.0 - d)))
        for n, b in model.named_buffers():
            e = self.buffers[n]
            e.copy_(b.detach().to(e.device, e.dtype))
        self.num_updates += 1
        return d

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into `module` (e.g. a separate eval copy), casting dtypes."""
        module = unwrap(module)
        for n, p in module.named_parameters():
            p.copy_(self.params[n].to(p.device, p.dtype))
        for n, b in module.named_buffers():
            b.copy_(self.buffers[n].to(b.device, b.dtype))

    def state_dict(self) -> dict:
        return {
            "params": {n: t.clone() for n, t in self.params.items()},
            "buffers": {n: t.clone() for n, t in self.buffers.items()},
            "num_updates": self.num_updates,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = (set(self.params) ^ set(state["params"])) | (set(self.buffers) ^ set(state["buffers"]))
        if missing:
            raise KeyError(f"EMA state does not match the model; mismatched names: {sorted(missing)[:10]}")
        for n, t in state["params"].items():
            self.params[n].copy_(t)
        for n, t in state["buffers"].items():
            self.buffers[n].copy_(t)
        self.num_updates = int(state["num_updates"])
        self.warmup = bool(state.get("warmup", self.warmup))
