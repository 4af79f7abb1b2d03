"""A trained model out of its run folder: `load_model` (with `predict`) and `evaluate_checkpoint` (`bagoftricks eval`).

Both rebuild the checkpoint's model from its own recipe with `engine.derive.model_from_checkpoint`
(the raw weights unless asked for the EMA ones) and frame images as the run's evaluation did. A model
folder (`local-dir:DIR`, `hf-hub:ORG/NAME[@REV]`, a folder holding config.json; `models.hub`) is
built from its config.json instead, framed by its pretrained_cfg and named by its label_names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.derive import (CheckpointModel, autocast, eval_batch_size, eval_transform,
                                       model_from_checkpoint, resolve_device, tta_border)
from bagoftricks.engine.evaluate import evaluate
from bagoftricks.engine.setup import build_data
from bagoftricks.errors import CheckpointError, UsageError
from bagoftricks.models.hub import is_model_folder


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


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, with what it needs to be used (see load_model)."""
    model: nn.Module         # eval mode, on the device asked for
    recipe: brecipe.Recipe   # the recipe it was trained with
    transform: object        # uint8 [B, C, H, W] (any size) -> the float input the model was evaluated on
    classes: list            # class names, index = logit
    checkpoint: Path         # the file the weights came from

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def in_channels(self) -> int:
        return int(next(m for m in self.model.modules() if isinstance(m, nn.Conv2d)).in_channels)

    @property
    def border(self) -> tricks.Border:
        """What test-time shifts bring in at the edge: what the training crops padded with (tricks.tta_border)."""
        return tta_border(self.recipe, self.transform)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Logits of uint8 images [B, C, H, W] (or one [C, H, W]), framed and normalised as at evaluation, run
        under the recipe's train.precision (averaged over the views of `tta`: none, flip, flip_shift)."""
        if images.dim() == 3:
            images = images[None]
        if images.dtype != torch.uint8:
            raise UsageError(f"images: uint8 [B, C, H, W] on the 0..255 scale expected, got {images.dtype}")
        if images.shape[1] != self.in_channels:
            raise UsageError(f"images: the model takes {self.in_channels}-channel images, got {images.shape[1]} "
                             f"channels (shape {list(images.shape)})")
        x = self.transform(images.cpu()).to(self.device)
        with autocast(self.recipe.train.precision, self.device):
            return tricks.tta_logits(self.model, x, tta, self.border).float()

    def predict(self, images: torch.Tensor, topk: int = 5, tta: str = "none") -> list[list[tuple[str, float]]]:
        """The `topk` (class name, probability) pairs of every image, most probable first."""
        if topk < 1:
            raise UsageError(f"topk: must be >= 1, got {topk}")
        probs = self.logits(images, tta).softmax(dim=1)
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
        return [[(self.classes[i], p) for i, p in zip(row_i.tolist(), row_p.tolist())]
                for row_i, row_p in zip(indices, values)]


def load_model(path: str | Path, device: str = "cpu", use_ema: bool = False) -> LoadedModel:
    """Rebuild the model of a checkpoint file, or of a run folder's newest valid checkpoint.

    The architecture comes from the checkpoint's own recipe (the zoo builds it), the weights from the
    checkpoint: the raw ones by default, the EMA ones with use_ema (an error naming the file when the
    run kept none). `transform` takes uint8 images [B, C, H, W] of any size to what the model saw at
    evaluation: resized to data.image_size (with the §2 augmentation, the shorter edge to
    data.image_size / data.crop_ratio and a centre crop), minus the mean and divided by the std of the
    training data, both on the 0..255 scale.
    """
    ck = _restore(path, use_ema)
    model = ck.model.to(resolve_device(device)).eval()
    folder = ck.state.get("model_folder")
    transform = eval_transform(ck.recipe, ck.in_channels) if folder is None else \
        bdata.EvalTransform(folder.image_size, crop_ratio=folder.crop_ratio, mean=folder.mean, std=folder.std,
                            interpolation=folder.interpolation)
    return LoadedModel(model, ck.recipe, transform, ck.classes, ck.path)


def _from_folder(path: str | Path, use_ema: bool) -> CheckpointModel:
    """A model folder as a checkpoint: its model, its recipe (folders we wrote) or one naming the model and
    input size, and ``state["model_folder"]``, what its config.json says (models.hub.FolderConfig)."""
    if use_ema:
        raise UsageError(f"--ema: {path} is a model folder, which holds one set of weights")
    fm = bmodels.folder_model(path)
    c = fm.config
    rd = c.recipe or {"model": c.model, "data": {"image_size": c.image_size, "crop_ratio": c.crop_ratio}}
    state = {"recipe": rd, "num_classes": c.num_classes, "in_channels": c.in_channels, "classes": c.classes,
             "model_folder": c}
    return CheckpointModel(fm.model, brecipe.from_dict(rd), state, fm.folder, fm.what)


def _restore(path: str | Path, use_ema: bool):
    if is_model_folder(path):
        return _from_folder(path, use_ema)
    try:
        return model_from_checkpoint(path, ema=use_ema)
    except CheckpointError as e:
        if use_ema and "no EMA weights" in str(e):
            raise UsageError(f"--ema: {e}") from None
        raise


def evaluate_checkpoint(path: str | Path, data_root: str | None = None, overrides=(), device: str = "auto",
                        use_ema: bool = False, want_logits: bool = False, tta: str | None = None) -> dict:
    """Rebuild a checkpoint's model and test data from its saved recipe and evaluate it.

    `path` is a checkpoint file or a run folder (its newest valid checkpoint). `data_root` and
    `overrides` (data.* only) point the evaluation at other data of the same classes. use_ema takes
    the EMA weights (an error when the run had none). tta: a tricks.tta mode (None: the run's own),
    reported beside the plain numbers ("tta_top1", ...). With want_logits the result also holds
    "logits", "labels" and "classes" for the report's figures.
    """
    ck = _restore(path, use_ema)
    ckpt, state = ck.path, ck.state
    if "model_folder" in state and state["model_folder"].recipe is None:
        raise UsageError(f"{path}: a model folder not written by bagoftricks records no training data to evaluate "
                         f"on; `bagoftricks predict --checkpoint {path} IMAGES` runs it on image files")
    r = _eval_recipe(state, data_root, overrides)
    dev = resolve_device(device)
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    if data.num_classes != state["num_classes"]:
        raise UsageError(f"{data_root or r.data.root or r.data.name}: {data.num_classes} classes, but {ckpt} "
                         f"was trained on {state['num_classes']}")
    model = ck.model.to(dev)
    tta = r.tricks.tta if tta is None else tta
    res = evaluate(model, data.test, data.eval_transform, eval_batch_size(r), dev, r.train.precision, False,
                   want_logits=want_logits, tta=tta,
                   border=tta_border(r, data.eval_transform))
    out = {"checkpoint": str(ckpt), "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
           "images": res["images"], "data": r.data.name, "root": r.data.root}
    out.update({k: v for k, v in res.items() if k.startswith("tta")})
    if want_logits:
        classes = list(state.get("classes") or data.classes) or [str(k) for k in range(state["num_classes"])]
        out.update(logits=res["logits"].float(), labels=res["labels"].long(), classes=classes, recipe=r)
    return out
