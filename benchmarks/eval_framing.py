"""The same trained weights evaluated with two framings of the test image.

    python benchmarks/eval_framing.py RUN [--crop-ratio 0.875] [--out FILE.json]

"whole": what bagoftricks evaluates a pad-and-crop ("small") run with: the whole image resized to
data.image_size, as training framed it. "centre crop": the §2 framing, shorter edge to
data.image_size / crop_ratio and a centre crop, which bagoftricks used for every preset before
evaluation followed the training framing (engine/setup.py, eval_crop_ratio). On 28 px Fashion-MNIST
trained at data.image_size 32, the centre crop shows every test garment enlarged by 1/0.875 over what
training saw and cuts its edges: benchmarks/README.md, "ResNet-18-D at 32 px", has the measured gap.
Prints (and with --out writes) {"run", "image_size", "whole_top1", "crop_top1", "crop_ratio"}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bagoftricks import data as bdata
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine.evaluate import evaluate
from bagoftricks.engine.inference import load_model
from bagoftricks.engine.setup import build_data, eval_batch_size, normalisation
from bagoftricks.files import write_json


def framings(run: str | Path, crop_ratio: float = 0.875, device: str = "cpu") -> dict:
    """Top-1 of the run's newest checkpoint with its own evaluation and with a centre crop."""
    if not 0.0 < crop_ratio <= 1.0:
        raise ValueError(f"--crop-ratio: must be in (0, 1], got {crop_ratio}")
    m = load_model(run, device=device)
    r, dev = m.recipe, next(m.model.parameters()).device
    data = build_data(r, dev, bdist.DistInfo(), train=False)
    mean, std = normalisation(r, data.in_channels)
    crop = bdata.EvalTransform(r.data.image_size, crop_ratio=crop_ratio, mean=mean, std=std)
    top = {}
    for name, transform in (("whole", m.transform), ("crop", crop)):
        res = evaluate(m.model, data.test, transform, eval_batch_size(r), dev, r.train.precision, False)
        top[name] = res["top1"]
    return {"run": str(run), "checkpoint": str(m.checkpoint), "image_size": r.data.image_size,
            "augment": r.data.augment, "whole_top1": top["whole"], "crop_top1": top["crop"], "crop_ratio": crop_ratio}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a bagoftricks run folder or checkpoint")
    p.add_argument("--crop-ratio", type=float, default=0.875, help="the centre crop's ratio (default 0.875)")
    p.add_argument("--out", default=None, help="also write the result here (JSON)")
    args = p.parse_args(argv)
    try:
        res = framings(args.run, args.crop_ratio)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    if args.out:
        write_json(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
