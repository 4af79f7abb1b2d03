"""Detection training speed on one GPU in fp32, bf16 and fp16 (autocast; fp16 with its loss scale).

    python benchmarks/transfer_amp_gpu.py --out runs/amp-gpu              # ResNet-50-D + FPN 256 at 512 px
    python benchmarks/transfer_amp_gpu.py --set model.arch=resnet18 --set data.image_size=320

Makes a shapes folder (benchmarks/shapes_folder.py: 256 training images in VOC layout, nothing downloaded),
builds the transfer job of each precision from the same recipe (transfer.job.setup_transfer: the engine's
TrainStep, the detector's heads in fp32), trains --warmup steps untimed, then times --steps steps with the
device synchronised before and after, and prints one line per precision and a JSON line:
img/s, ms/step and the last loss. The backbone and FPN run under autocast; with channels_last (the default
here) the weights are NHWC. Run it on an idle GPU; compare the rows with each other only.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from bagoftricks import recipe as brecipe
from bagoftricks.transfer.job import setup_transfer

BASE = {
    "model": {"arch": "resnet50", "variant": "D"},
    "data": {"name": "voc", "image_size": 512, "flip": 0.5},
    "optim": {"lr": 0.02},
    "schedule": {"kind": "cosine"},
    "transfer": {"task": "detect", "fpn_channels": 256, "trainable_layers": 3},
    "train": {"steps": 1000, "batch_size": 8, "device": "cuda", "channels_last": True},
}


def _shapes(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("shapes_folder", Path(__file__).with_name("shapes_folder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_folder(out, train=256, test=16, size=(300, 500))["voc"]


def time_precision(r: brecipe.Recipe, precision: str, warmup: int, steps: int) -> dict:
    r = brecipe.apply_overrides(r, [f"train.precision={precision}"])
    device = torch.device(r.train.device)
    job = setup_transfer(r, device)
    batches = list(job.batches(0, 0))
    run = lambda k: job.step(batches[k % len(batches)], 0, k % job.steps_per_epoch)  # noqa: E731
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda d: None)
    for k in range(warmup):
        run(k)
    sync(device)
    t0 = time.perf_counter()
    for k in range(warmup, warmup + steps):
        res = run(k)
    sync(device)
    dt = time.perf_counter() - t0
    return {"precision": precision, "img_s": steps * r.train.batch_size / dt, "ms_step": 1000 * dt / steps,
            "loss": float(res.loss.detach()),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/amp-gpu", help="folder for the shapes data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    a = p.parse_args(argv)
    if not torch.cuda.is_available() and "train.device=cpu" not in a.overrides:
        raise SystemExit("transfer_amp_gpu: no CUDA device (--set train.device=cpu for a dry run on the CPU)")
    root = _shapes(Path(a.out) / "shapes")
    r = brecipe.apply_overrides(brecipe.from_dict(BASE), [f"data.root={root}", *a.overrides])
    rows = [time_precision(brecipe.validate(r), prec, a.warmup, a.steps) for prec in ("fp32", "bf16", "fp16")]
    for row in rows:
        print(f"{row['precision']:>5}: {row['img_s']:8.1f} img/s  {row['ms_step']:7.1f} ms/step  "
              f"loss {row['loss']:.3f}  ({row['img_s'] / rows[0]['img_s']:.2f}x fp32)")
    print(json.dumps({"rows": rows, "overrides": a.overrides}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
