"""Synchronised batch normalisation for any device and backend (gloo on CPU included).

``torch.nn.SyncBatchNorm`` runs only on CUDA (its statistics kernels are CUDA kernels, and DDP
refuses it on CPU modules). The engine uses it on GPUs; on every other device ``model.sync_bn``
converts the BatchNorm layers to the ``SyncBatchNorm`` below, which computes the same thing with two
differentiable all-reduces per layer:

    mean = all_reduce(Σ x) / N          var = all_reduce(Σ (x - mean)²) / N      (N: images × pixels, all ranks)
    y = (x - mean) / sqrt(var + eps) · γ + β

The backward pass of an all-reduce (sum) is an all-reduce of the incoming gradients, so each rank's
input gradient includes what its images contributed to the other ranks' losses through the shared
statistics. With DDP averaging the parameter gradients, W ranks with batch b therefore take exactly
the step of one process with batch W·b (up to float rounding). Running statistics are updated as
BatchNorm does (unbiased variance, same momentum) and are identical on every rank. Outside training,
without an initialised process group, or with one process, the layer is a plain BatchNorm; its
parameters and buffers have BatchNorm's names, so checkpoints move freely between sync_bn on/off.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over ranks of `t`, differentiable (the gradient is summed over ranks as well)."""
    return _AllReduceSum.apply(t)


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are taken over the batches of all ranks (any backend)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _world(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or self._world() == 1:
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)
        total = all_reduce_sum(torch.cat([xf.sum(dims).double(), count]))  # float64: exact counts, no drift
        n = total[c].detach()
        mean = (total[:c] / n).float()
        centred = xf - mean.view(shape)
        var = (all_reduce_sum((centred * centred).sum(dims).double()) / n).float()
        n = n.float()
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (n / torch.clamp(n - 1, min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm layer of `module` as the portable SyncBatchNorm (sharing its parameters)."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA (fused kernels, NCCL), the portable one elsewhere."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_sync_batchnorm(module)

