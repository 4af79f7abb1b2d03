"""`bagoftricks predict --checkpoint RUN PATH...`: the top-k classes of image files with a run's model.

The model, its evaluation transform (resize, centre crop, normalisation) and its class names come
from the checkpoint, as `bagoftricks eval` uses them (from a model folder: its config.json's
pretrained_cfg and label_names); images are run in batches on the device, under
the recipe's train.precision, with test-time augmentation when asked (--tta). A file that cannot be
decoded is reported with its reason and does not stop the others. Exit status: 0 when any image was
predicted, 2 when none was (and for a checkpoint that cannot be used).
"""
from __future__ import annotations

import csv
import io
import json
import sys
from typing import NamedTuple

import torch

from bagoftricks import tricks
from bagoftricks.deploy.images import collect, load_image
from bagoftricks.engine.inference import LoadedModel, load_model
from bagoftricks.engine.derive import autocast, resolve_device
from bagoftricks.errors import BadInput, UsageError

PROGRESS_FROM = 200  # files: a progress bar (on a terminal) for more than this many


class Prediction(NamedTuple):
    path: str
    top: list[tuple[str, int, float]]  # (class name, class index, probability), best first


class Failure(NamedTuple):
    path: str
    reason: str


def _bar(total: int, progress: bool | None):
    if progress is False or total <= PROGRESS_FROM:
        return None
    from tqdm import tqdm
    bar = tqdm(total=total, unit="img", desc="predict", disable=None if progress is None else False, leave=False,
               file=sys.stderr)  # None: on a terminal only
    return None if bar.disable else bar


def _top(lm: LoadedModel, logits: torch.Tensor, k: int) -> list[list[tuple[str, int, float]]]:
    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(lm.classes[i], i, p) for i, p in zip(row_i.tolist(), row_p.tolist())]
            for row_i, row_p in zip(indices, values)]


@torch.no_grad()
def _run_batch(lm: LoadedModel, images: list[torch.Tensor], device: torch.device, tta: str) -> torch.Tensor:
    x = torch.stack([lm.transform(im) for im in images]).to(device)
    with autocast(lm.recipe.train.precision, device):
        return tricks.tta_logits(lm.model, x, tta, lm.border)


def predict_files(paths: list[str], checkpoint: str, topk: int = 5, batch_size: int = 64, device: str = "auto",
                  use_ema: bool = False, tta: str = "none", progress: bool | None = None,
                  ) -> tuple[list[Prediction], list[Failure]]:
    """Predictions for every readable file under ``paths`` and the failures, each in file order."""
    if topk < 1 or batch_size < 1:
        raise UsageError(f"--topk and --batch-size must be >= 1, got {topk} and {batch_size}")
    dev = resolve_device(device)
    lm = load_model(checkpoint, device=str(dev), use_ema=use_ema)
    channels = next(m for m in lm.model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    files, preds, fails = collect(paths), [], []
    bar, batch = _bar(len(files), progress), []
    for i, path in enumerate(files):
        try:
            batch.append((path, load_image(path, channels)))
        except BadInput as e:
            fails.append(Failure(path, str(e).removeprefix(f"{path}: ")))
        if batch and (len(batch) == batch_size or i + 1 == len(files)):
            logits = _run_batch(lm, [im for _, im in batch], dev, tta)
            preds += [Prediction(p, top) for (p, _), top in zip(batch, _top(lm, logits, topk))]
            batch = []
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return preds, fails


def render(preds: list[Prediction], fails: list[Failure], fmt: str) -> str:
    """The predictions and failures as a table, CSV or one JSON document."""
    if fmt == "json":
        return json.dumps({"predictions": [{"path": p.path, "top": [{"class": c, "index": i, "probability": q}
                                                                    for c, i, q in p.top]} for p in preds],
                           "errors": [{"path": f.path, "reason": f.reason} for f in fails]}, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "rank", "class", "index", "probability", "error"])
        w.writerows([p.path, r + 1, c, i, f"{q:.6f}", ""] for p in preds for r, (c, i, q) in enumerate(p.top))
        w.writerows([f.path, "", "", "", "", f.reason] for f in fails)
        return buf.getvalue().rstrip("\n")
    lines = [f"{p.path}  " + "  ".join(f"{c} {100 * q:.1f}%" for c, _, q in p.top) for p in preds]
    lines += [f"{f.path}  error: {f.reason}" for f in fails]
    return "\n".join(lines)


def transfer_task(checkpoint: str) -> str:
    """'detect' or 'segment' for a transfer run's checkpoint (or run folder), '' for a classifier's (and for
    a model folder: local-dir:, hf-hub:)."""
    from bagoftricks.checkpoint import read_checkpoint
    from bagoftricks.models.hub import is_model_folder
    if is_model_folder(checkpoint):
        return ""
    return str(read_checkpoint(checkpoint).state.get("task", ""))


def draw_predictions(paths: list[str], checkpoint: str, dest: str) -> tuple[list[tuple[str, str]], list[Failure]]:
    """A detection/segmentation run's boxes or label maps drawn on every readable file under ``paths``
    into dest/<file stem>.png; (file, png) pairs and the failures, each in file order."""
    from bagoftricks.transfer.predict import draw_files
    good, fails = [], []
    for path in collect(paths):
        try:
            load_image(path, 3)
            good.append(path)
        except BadInput as e:
            fails.append(Failure(path, str(e).removeprefix(f"{path}: ")))
    written = draw_files(checkpoint, good, dest) if good else []
    return [(src, str(out)) for src, out in zip(good, written)], fails


def cmd_predict(args) -> int:
    if transfer_task(args.checkpoint):
        written, fails = draw_predictions(args.paths, args.checkpoint, args.draw)
        print("\n".join([f"{src} -> {out}" for src, out in written] + [f"{f.path}  error: {f.reason}" for f in fails]))
        print(f"{len(written)} image(s) drawn into {args.draw}, {len(fails)} could not be read", file=sys.stderr)
        return 0 if written else 2
    preds, fails = predict_files(args.paths, args.checkpoint, topk=args.topk, batch_size=args.batch_size,
                                 device=args.device, use_ema=args.ema, tta=args.tta or "none",
                                 progress=False if args.no_progress else None)
    print(render(preds, fails, args.format))
    print(f"{len(preds)} image(s) predicted, {len(fails)} could not be read", file=sys.stderr)
    return 0 if preds else 2
