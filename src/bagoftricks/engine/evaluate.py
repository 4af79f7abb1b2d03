"""`bagoftricks eval`: rebuild a checkpoint's model and data from its saved recipe and score it."""
from __future__ import annotations


from bagoftricks import recipe as brecipe
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.checkpoint import load_checkpoint, resolve_checkpoint
from bagoftricks.engine.loop import (UsageError, build_data, build_model, ema_weights, evaluate,
                                     resolve_device)


def evaluate_checkpoint(path, data_root: str | None = None, overrides=(), device: str = "auto",
                        use_ema: bool = False) -> dict:
    ckpt = resolve_checkpoint(path)
    state = load_checkpoint(ckpt)
    r = brecipe.from_dict(state["recipe"])
    for item in overrides or ():
        if not item.split("=", 1)[0].strip().startswith("data."):
            raise UsageError(f"eval --set {item}: only data.* fields can be changed at evaluation")
    r = brecipe.apply_overrides(r, overrides)
    if data_root:
        r = brecipe.from_dict({"data": {"root": data_root}}, r)
    r = brecipe.validate(r)
    dev = resolve_device(device)
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    if data.num_classes != state["num_classes"]:
        raise UsageError(f"--data: {data.num_classes} classes, but {ckpt} was trained on {state['num_classes']}")
    model = build_model(r, state["num_classes"], state.get("in_channels", data.in_channels))
    weights = state["model"]
    if use_ema:
        weights = ema_weights(state)
        if weights is None:
            raise UsageError(f"--ema: {ckpt} holds no EMA weights (tricks.ema_decay was 0)")
    model.load_state_dict(weights)
    model.to(dev)
    bs = r.train.eval_batch_size or 2 * r.train.batch_size
    res = evaluate(model, data.test, data.eval_transform, bs, dev, r.train.precision, False)
    return {"checkpoint": str(ckpt), "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "images": res["images"], "data": r.data.name, "root": r.data.root}
