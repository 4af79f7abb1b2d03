"""Test-set logits of a trained run, for the report's logit-gap (Figure 4) and confusion-matrix figures.

Rebuilds the model and the evaluation data from the checkpoint's own recipe (as `bagoftricks eval`
does) and keeps the logits that `engine.loop.evaluate(..., want_logits=True)` returns.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bagoftricks import recipe as brecipe
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.checkpoint import load_checkpoint, resolve_checkpoint
from bagoftricks.engine.loop import UsageError, build_data, build_model, evaluate, resolve_device


def logits_on_test_set(run: str | Path, device: str = "cpu", use_ema: bool = False) -> dict:
    """{"logits": (N, K) float tensor, "labels": (N,), "classes", "recipe", "top1", "checkpoint"}.

    `run` is a run folder (its newest valid checkpoint, i.e. the final weights of a finished run) or
    a checkpoint file.
    """
    ckpt = resolve_checkpoint(run)
    state = load_checkpoint(ckpt)
    r = brecipe.validate(brecipe.from_dict(state["recipe"]))
    dev = resolve_device(device)
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    if data.num_classes != state["num_classes"]:
        raise UsageError(f"{ckpt}: trained on {state['num_classes']} classes, its test data has {data.num_classes}")
    model = build_model(r, state["num_classes"], state.get("in_channels", data.in_channels))
    weights = state.get("ema") if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    model.to(dev)
    bs = r.train.eval_batch_size or 2 * r.train.batch_size
    res = evaluate(model, data.test, data.eval_transform, bs, dev, r.train.precision, False, want_logits=True)
    classes = list(state.get("classes") or data.classes) or [str(k) for k in range(state["num_classes"])]
    return {"logits": res["logits"].float(), "labels": res["labels"].long(), "classes": classes, "recipe": r,
            "top1": res["top1"], "checkpoint": str(ckpt)}


def logit_gaps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the largest other logit, per image (> 0 exactly when top-1 is right)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels[:, None], float("-inf"))
    return true - other.max(dim=1).values


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    pred = logits.argmax(dim=1)
    idx = labels * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
