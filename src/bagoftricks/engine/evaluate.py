"""Evaluation: top-1/top-5 of a model on a test split, and of a checkpoint rebuilt from its own recipe.

`evaluate` is what the loop runs after an epoch; `evaluate_checkpoint` is `bagoftricks eval` and,
with want_logits=True, what the report reads its logit-gap and confusion figures from; `load_model`
rebuilds a checkpoint's model (with its evaluation transform) for use in Python.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks import data as bdata
from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.checkpoint import ema_weights, load_checkpoint, resolve_checkpoint
from bagoftricks.engine.setup import (autocast, build_data, eval_batch_size, eval_transform, recipe_model,
                                      resolve_device)
from bagoftricks.errors import UsageError


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
             workers: int = 2, timeout: float = 0.0, tta: str = "none") -> dict:
    """Top-1/top-5 and mean loss over every test image exactly once (summed over ranks).

    Call it with the plain model, not the DDP wrapper: ranks may hold one batch more or less, and
    only the final all-reduce of the sums is a collective (BN, SyncBN included, uses running stats).
    With tta (tricks.tta) other than "none", the same pass also gives "tta_top1", "tta_top5" and
    "tta_loss" of the logits averaged over the views (tricks.tta_views; the first view is the plain image).
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
            views = [model(v).float() for v in tricks.tta_views(x, tta)]
        sums[:3] += _sums(views[0], y)
        sums[3] += y.numel()
        if len(views) > 1:
            sums[4:] += _sums(torch.stack(views).mean(0), y)
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


def _eval_recipe(state: dict, data_root: str | None, overrides) -> brecipe.Recipe:
    """The checkpoint's recipe with the data.* changes evaluation allows."""
    r = brecipe.from_dict(state["recipe"])
    for item in overrides or ():
        if not item.split("=", 1)[0].strip().startswith("data."):
            raise UsageError(f"eval --set {item}: only data.* fields can be changed at evaluation")
    r = brecipe.apply_overrides(r, overrides)
    if data_root:
        r = brecipe.from_dict({"data": {"root": data_root}}, r)
    return brecipe.validate(r)


class LoadedModel(NamedTuple):
    """A model rebuilt from a checkpoint (see load_model)."""
    model: nn.Module         # eval mode, on the device asked for
    recipe: brecipe.Recipe   # the recipe it was trained with
    transform: object        # uint8 [B, C, H, W] -> the float input the model was evaluated on
    classes: list            # class names, index = logit
    checkpoint: Path         # the file the weights came from


def _checkpoint_model(state: dict, r: brecipe.Recipe, ckpt: Path, use_ema: bool) -> nn.Module:
    """The zoo's model for the checkpoint's recipe with the checkpoint's (or its EMA) weights."""
    model = recipe_model(r, state["num_classes"], state.get("in_channels", 3))
    weights = state["model"]
    if use_ema:
        weights = ema_weights(state)
        if weights is None:
            raise UsageError(f"--ema: {ckpt} holds no EMA weights (tricks.ema_decay was 0)")
    model.load_state_dict(weights)
    return model


def load_model(path: str | Path, device: str = "cpu", use_ema: bool = False) -> LoadedModel:
    """Rebuild the model of a checkpoint file, or of a run folder's newest valid checkpoint.

    The architecture comes from the checkpoint's own recipe (the zoo builds it), the weights from the
    checkpoint (its EMA weights with use_ema). `transform` takes uint8 images [B, C, H, W] of any size
    to what the model saw at evaluation: resized to data.image_size (with the §2 augmentation, the
    shorter edge to data.image_size / data.crop_ratio and a centre crop), minus the mean and divided
    by the std of the training data, both on the 0..255 scale.
    """
    ckpt = resolve_checkpoint(path)
    state = load_checkpoint(ckpt)
    r = brecipe.from_dict(state["recipe"])
    model = _checkpoint_model(state, r, ckpt, use_ema).to(resolve_device(device)).eval()
    in_channels = state.get("in_channels", 3)
    classes = list(state.get("classes") or []) or [str(k) for k in range(state["num_classes"])]
    return LoadedModel(model, r, eval_transform(r, in_channels), classes, ckpt)


def evaluate_checkpoint(path: str | Path, data_root: str | None = None, overrides=(), device: str = "auto",
                        use_ema: bool = False, want_logits: bool = False, tta: str | None = None) -> dict:
    """Rebuild a checkpoint's model and test data from its saved recipe and evaluate it.

    `path` is a checkpoint file or a run folder (its newest valid checkpoint). `data_root` and
    `overrides` (data.* only) point the evaluation at other data of the same classes. use_ema takes
    the EMA weights (an error when the run had none). tta: a tricks.tta mode (None: the run's own),
    reported beside the plain numbers ("tta_top1", ...). With want_logits the result also holds
    "logits", "labels" and "classes" for the report's figures.
    """
    ckpt = resolve_checkpoint(path)
    state = load_checkpoint(ckpt)
    r = _eval_recipe(state, data_root, overrides)
    dev = resolve_device(device)
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    if data.num_classes != state["num_classes"]:
        raise UsageError(f"{data_root or r.data.root or r.data.name}: {data.num_classes} classes, but {ckpt} "
                         f"was trained on {state['num_classes']}")
    model = _checkpoint_model(state, r, ckpt, use_ema).to(dev)
    tta = r.tricks.tta if tta is None else tta
    res = evaluate(model, data.test, data.eval_transform, eval_batch_size(r), dev, r.train.precision, False,
                   want_logits=want_logits, tta=tta)
    out = {"checkpoint": str(ckpt), "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
           "images": res["images"], "data": r.data.name, "root": r.data.root}
    out.update({k: v for k, v in res.items() if k.startswith("tta")})
    if want_logits:
        classes = list(state.get("classes") or data.classes) or [str(k) for k in range(state["num_classes"])]
        out.update(logits=res["logits"].float(), labels=res["labels"].long(), classes=classes, recipe=r)
    return out
