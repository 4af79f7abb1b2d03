"""How far an exported model's logits are from PyTorch's at fp32: the measurement behind deploy/verify.py's rule.

    python benchmarks/export_tolerance.py            # ~2 minutes on 2 cores

For each model, in two states — BatchNorm statistics as initialised (a run stopped after a few steps:
running mean 0, variance 1, so activations grow through every block) and calibrated on random images
(the scale of a trained model's logits) — it exports to ONNX (run with onnxruntime) and torch.export,
runs both on the same random batch, and prints the largest logit, the largest absolute difference and
that difference relative to its image's largest |logit|. Weights are random (seeded): the rounding
error of reordered fp32 sums depends on the shapes and the activations' scale, not on what was learnt.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import torch

from bagoftricks.models import build_model

CASES = [  # (name, build_model arguments, image size)
    ("resnet20-D w16", dict(arch="resnet20", variant="D", in_channels=1), 28),
    ("resnet18-B", dict(arch="resnet18", variant="B"), 64),
    ("resnet50-D", dict(arch="resnet50", variant="D"), 64),
    ("resnet50-D", dict(arch="resnet50", variant="D"), 160),
    ("mobilenet_v1", dict(arch="mobilenet_v1"), 96),
    ("airbench", dict(arch="airbench", in_channels=1), 28),
]


def calibrate(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """BatchNorm running statistics from 4 batches of random images (cumulative average)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(torch.randn(16, *shape, generator=torch.Generator().manual_seed(100 + i)))
    model.eval()


def exported(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> dict:
    import onnxruntime as ort
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},))
    with contextlib.redirect_stdout(io.StringIO()):
        onnx = torch.onnx.export(model, (x[:2],), dynamo=True, opset_version=18, dynamic_shapes=({0: batch},))
    onnx.save(str(folder / "m.onnx"))
    session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return {"onnx": torch.from_numpy(session.run(None, {name: x.numpy()})[0]), "torch.export": program.module()(x)}


def main() -> None:
    torch.manual_seed(0)
    print("| model | px | BN statistics | max abs logit | format | max abs diff | max diff / image's max abs logit |")
    print("|---|---:|---|---:|---|---:|---:|")
    for name, kw, size in CASES:
        kw = dict(kw)
        model = build_model(kw.pop("arch"), 10, kw.pop("in_channels", 3), **kw).eval()
        shape = (next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels, size, size)
        x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
        for state in ("initial", "calibrated"):
            if state == "calibrated":
                calibrate(model, shape)
            with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
                ref = model(x)
                for fmt, got in exported(model, x, Path(tmp)).items():
                    diff = (got - ref).abs()
                    rel = (diff / ref.abs().amax(dim=1, keepdim=True)).max().item()
                    print(f"| {name} | {size} | {state} | {ref.abs().max().item():.3g} | {fmt} | "
                          f"{diff.max().item():.3g} | {rel:.2g} |", flush=True)


if __name__ == "__main__":
    main()
