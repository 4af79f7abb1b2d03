"""Draws docs/results/figures/fmnist-transfer-predictions.png: the first test scenes of one detection run and
one segmentation run of the transfer sweep, ground truth next to the prediction, 4x enlarged.

    PYTHONPATH=src python docs/results/fmnist_transfer_figure.py \
        --detect runs/ablate/fmnist-transfer/runs/00-detect-efficient-resnet-20-d/seed0 \
        --segment runs/ablate/fmnist-transfer/runs/05-segment-efficient-resnet-20-d/seed0
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from bagoftricks.transfer import data as tdata  # noqa: E402
from bagoftricks.transfer.augment import augmentation  # noqa: E402
from bagoftricks.transfer.draw import draw  # noqa: E402
from bagoftricks.transfer.evaluate import predict  # noqa: E402
from bagoftricks.transfer.predict import SCORE_MIN, load_transfer  # noqa: E402

SCALE = 4


def _big(image):
    return image.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2)


def pictures(run: str, count: int) -> tuple[list, list, str]:
    """(truth pictures, predicted pictures, what the run scored) for the first `count` test scenes."""
    job = load_transfer(run)
    idx = list(range(min(count, len(job.test))))
    images, targets = tdata.load_batch(job.test, idx, augmentation(job.recipe.data.image_size))
    preds = predict(job, images, targets)
    truth, guess = [], []
    for im, t, p in zip(images, targets, preds):
        if job.detect:
            keep = p["scores"] >= SCORE_MIN
            truth.append(draw(_big(im), boxes=t["boxes"] * SCALE, labels=t["labels"], classes=job.test.classes))
            guess.append(draw(_big(im), boxes=p["boxes"][keep] * SCALE, labels=p["labels"][keep],
                              scores=p["scores"][keep], classes=job.test.classes))
        else:
            truth.append(draw(_big(im), mask=_big(t["mask"][None])[0]))
            guess.append(draw(_big(im), mask=_big(p["mask"][None])[0]))
    return truth, guess, job.recipe.transfer.task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detect", required=True)
    ap.add_argument("--segment", required=True)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures" / "fmnist-transfer-predictions.png"))
    a = ap.parse_args()
    rows = [pictures(a.detect, a.count), pictures(a.segment, a.count)]
    fig = Figure(figsize=(2.0 * a.count, 8.4))
    axes = fig.subplots(4, a.count, squeeze=False)
    for r, (truth, guess, task) in enumerate(rows):
        for i in range(a.count):
            for k, (pics, what) in enumerate(((truth, "truth"), (guess, "prediction"))):
                ax = axes[2 * r + k, i]
                ax.set_axis_off()
                if i < len(pics):
                    ax.imshow(pics[i].permute(1, 2, 0).numpy(), interpolation="nearest")
                    ax.set_title(f"{task}: {what}, scene {i}", fontsize=7)
    fig.suptitle(f"Test scenes: Faster R-CNN boxes (score ≥ {SCORE_MIN}) and FCN label maps, truth above "
                 "prediction", fontsize=10)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(a.out)


if __name__ == "__main__":
    main()
