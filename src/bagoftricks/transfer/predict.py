"""A transfer run's model rebuilt from its checkpoint, and its predictions drawn onto PNGs.

    job = load_transfer("runs/det")                # run folder or step-N.pt; eval mode, with its test split
    paths = draw_run("runs/det", 8)                # RUN/predictions/test-0000.png ...: truth | prediction
    paths = draw_files("runs/det", ["a.jpg"], "out")  # predictions on your own images: out/a.png

Each picture puts the ground truth (left) next to the prediction (right): boxes with their class and
score (detections scoring at least SCORE_MIN) or the predicted label map.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from bagoftricks import recipe as brecipe
from bagoftricks.checkpoint import read_checkpoint
from bagoftricks.engine.derive import normalisation
from bagoftricks.errors import CheckpointError
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.augment import augmentation
from bagoftricks.transfer.draw import draw, save_png
from bagoftricks.transfer.evaluate import predict
from bagoftricks.transfer.job import TransferJob, build_model

SCORE_MIN = 0.5


def load_transfer(path: str | Path, device: str = "cpu") -> TransferJob:
    """The model of a transfer checkpoint (or run folder), in eval mode, with the run's test split."""
    ck = read_checkpoint(path)  # transfer runs keep no EMA: the raw weights
    state = ck.state
    if "task" not in state:
        raise CheckpointError(f"{ck.path} is a classification checkpoint, not a transfer run's")
    r = brecipe.from_dict(state["recipe"])
    test = replace(tdata.load_transfer_split(r, "test"), classes=list(state["classes"]))  # the model's classes
    model, _, _ = build_model(r, state["in_channels"], state["num_classes"], load=False)
    model.load_state_dict(ck.weights)
    model.to(device).eval()
    mean, std = normalisation(r, state["in_channels"])
    return TransferJob(r, torch.device(device), test, test, model, mean, std, state["in_channels"])


def drawn_pair(job: TransferJob, image: torch.Tensor, target: dict, pred: dict) -> torch.Tensor:
    """Truth (left) and prediction (right) drawn on one image, side by side: uint8 [3, H, 2W + 2]."""
    classes = job.test.classes
    if job.detect:
        keep = pred["scores"] >= SCORE_MIN
        truth = draw(image, boxes=target["boxes"], labels=target["labels"], classes=classes)
        guess = draw(image, boxes=pred["boxes"][keep], labels=pred["labels"][keep], scores=pred["scores"][keep],
                     classes=classes)
    else:
        truth, guess = draw(image, mask=target["mask"]), draw(image, mask=pred["mask"])
    gap = torch.full((3, image.shape[1], 2), 255, dtype=torch.uint8)
    return torch.cat([truth, gap, guess], dim=2)


def draw_run(path: str | Path, count: int, dest: str | Path | None = None) -> list[Path]:
    """Draw the first `count` test images of a transfer run into dest (default RUN/predictions/)."""
    job = load_transfer(path)
    run = Path(path) if Path(path).is_dir() else Path(path).parent.parent
    dest = Path(dest) if dest is not None else run / "predictions"
    idx = list(range(min(count, len(job.test))))
    images, targets = tdata.load_batch(job.test, idx, augmentation(job.recipe.data.image_size))
    preds = predict(job, images, targets)
    return [save_png(dest / f"test-{i:04d}.png", drawn_pair(job, im, t, p))
            for i, im, t, p in zip(idx, images, targets, preds)]


def _as_model_input(path: str, channels: int, size: int) -> torch.Tensor:
    """An image file as the model takes it: uint8 [channels, size, size] (gray by ITU-R 601 luma for 1 channel)."""
    from torchvision.transforms.v2 import functional as tvf

    from bagoftricks.data.images import as_channels, decode_rgb
    return tvf.resize(as_channels(decode_rgb(path), channels, path), [size, size], antialias=True)


def draw_files(checkpoint: str | Path, files: list[str], dest: str | Path) -> list[Path]:
    """A transfer run's predictions drawn on image files (resized to its data.image_size) into dest/<stem>.png:
    the hook for `bagoftricks predict` on a detection or segmentation run."""
    job = load_transfer(checkpoint)
    size, out = job.recipe.data.image_size, []
    for f in files:
        image = _as_model_input(f, job.channels, size)
        pred = predict(job, [image], [{"mask": torch.zeros(size, size, dtype=torch.uint8)}])[0]
        if job.detect:
            keep = pred["scores"] >= SCORE_MIN
            drawn = draw(image, boxes=pred["boxes"][keep], labels=pred["labels"][keep], scores=pred["scores"][keep],
                         classes=job.test.classes)
        else:
            drawn = draw(image, mask=pred["mask"])
        out.append(save_png(Path(dest) / f"{Path(f).stem}.png", drawn))
    return out
