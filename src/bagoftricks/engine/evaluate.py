"""Evaluation: top-1/top-5 (and with test-time augmentation) of a model on a test split.

`evaluate` is what a run does after an epoch; `engine.inference.evaluate_checkpoint` (`bagoftricks
eval`) runs it on a checkpoint rebuilt from its own recipe.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks import data as bdata
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import autocast


def _sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(summed loss, top-1 hits, top-5 hits) of one batch, on its device."""
    k = min(5, logits.shape[1])
    hit = logits.topk(k, dim=1).indices.eq(y[:, None])
    return torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, :1].sum().double(),
                        hit.any(dim=1).sum().double()])


def _result(sums: torch.Tensor, tta: str) -> dict:
    n = max(sums[3].item(), 1.0)
    out = {"loss": sums[0].item() / n, "top1": 100.0 * sums[1].item() / n, "top5": 100.0 * sums[2].item() / n,
           "images": int(sums[3].item())}
    if tta != "none":
        out.update(tta=tta, tta_loss=sums[4].item() / n, tta_top1=100.0 * sums[5].item() / n,
                   tta_top5=100.0 * sums[6].item() / n)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, ds, transform, batch_size: int, device: torch.device, precision: str,
             channels_last: bool, dinfo: bdist.DistInfo | None = None, want_logits: bool = False,
             workers: int = 2, timeout: float = 0.0, tta: str = "none", border: tricks.Border = 0.0) -> dict:
    """Top-1/top-5 and mean loss over every test image exactly once (summed over ranks).

    Call it with the plain model, not the DDP wrapper: ranks may hold one batch more or less, and
    only the final all-reduce of the sums is a collective (BN, SyncBN included, uses running stats).
    With tta (tricks.tta) other than "none", the same pass also gives "tta_top1", "tta_top5" and
    "tta_loss" of the logits averaged over the views (tricks.tta_views, tricks.tta_mean; the first view is the plain
    image); ``border`` is what its shifts bring in at the edge (tricks.tta_border).
    With want_logits, the result also holds this rank's plain "logits" (N, K) and "labels" (N,) on the CPU.
    """
    dinfo = dinfo or bdist.DistInfo()
    was_training = model.training
    model.eval()
    sums = torch.zeros(7, dtype=torch.float64, device=device)  # loss, top1, top5, n, and the same three with TTA
    all_logits, all_labels = [], []
    for x, y in bdata.eval_batches(ds, batch_size, transform, device, rank=dinfo.rank, world_size=dinfo.world_size,
                                   workers=workers, timeout=timeout):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            views = [model(v).float() for v in tricks.tta_views(x, tta, border)]
        sums[:3] += _sums(views[0], y)
        sums[3] += y.numel()
        if len(views) > 1:
            sums[4:] += _sums(tricks.tta_mean(views, tta), y)
        if want_logits:
            all_logits.append(views[0].cpu())
            all_labels.append(y.cpu())
    bdist.all_reduce_sum(sums, dinfo)
    model.train(was_training)
    out = _result(sums, tta)
    if want_logits:
        out["logits"] = torch.cat(all_logits) if all_logits else torch.empty(0)
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
    return out
