"""Options of `bagoftricks export` and `bagoftricks predict`; nothing here imports torch (the
commands' `--help` answers without it)."""
from __future__ import annotations

import argparse

EXPORT_FORMATS = ("safetensors", "torchvision", "timm", "onnx", "torch.export", "hf")
OUTPUT_FORMATS = ("table", "csv", "json")


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a run's model in another format: safetensors (weights + metadata: arch, classes, "
                     "normalisation, input size), torchvision/timm (their state-dict layout), onnx (run with "
                     "onnxruntime), torch.export (a .pt2 program) or hf (a folder in timm's Hugging Face Hub layout: "
                     "config.json, model.safetensors, a model card). Each is checked against PyTorch's logits where "
                     "it can be run, written to a temporary name and renamed: a failure leaves nothing behind.")
    p.add_argument("source", metavar="RUN", help="a run folder (its newest valid checkpoint) or a checkpoint file")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the output format")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (a folder for --format hf)")
    p.add_argument("--ema", action="store_true", help="export the EMA weights (tricks.ema_decay > 0)")
    p.add_argument("--force", action="store_true", help="replace FILE (or the model folder) when it exists")


def predict_arguments(p: argparse.ArgumentParser) -> None:
    from bagoftricks.cli import tta_argument
    p.description = ("Class scores of image files with a run's model, its evaluation transform and class names. "
                     "A file that cannot be decoded is reported and skipped; exit status 0 when any image "
                     "was predicted, 2 when none was.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="a run folder (its newest valid checkpoint), a checkpoint file, or a model folder: "
                        "local-dir:DIR or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--format", default="table", choices=OUTPUT_FORMATS, help="output: table (default), csv or json")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (the run's train.device), cpu, cuda or cuda:N")
    p.add_argument("--ema", action="store_true", help="use the EMA weights (tricks.ema_decay > 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--draw", default="predictions", metavar="DIR",
                   help="a detection or segmentation run (bagoftricks transfer): draw its boxes or label map on "
                        "each image into DIR/<file name>.png (default ./predictions)")
    tta_argument(p, "rank by the logits averaged over views (default: none)")
