"""An exported file run against the PyTorch model it came from, on the same random inputs.

Two batch sizes (1 and 3, neither the export's example batch of 2) show that the batch axis is
dynamic. The largest absolute difference of the logits is reported; one above TOLERANCE fails the
export (its file is not kept). onnxruntime is an optional extra: without it the ONNX file is written
unchecked and the report says so.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bagoftricks.errors import RunFailure

TOLERANCE = 1e-3  # fp32 logits; reordered convolutions differ by ~1e-6 at these sizes
BATCHES = (1, 3)


def _inputs(shape: torch.Size) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, *shape[1:], generator=g) for b in BATCHES]


def _compare(model: torch.nn.Module, run, shape: torch.Size, what: str) -> float:
    worst = 0.0
    with torch.no_grad():
        for x in _inputs(shape):
            worst = max(worst, (torch.as_tensor(run(x)).float() - model(x).float()).abs().max().item())
    if not worst <= TOLERANCE:
        raise RunFailure(f"{what} disagrees with PyTorch: max abs logit difference {worst:.3g} > {TOLERANCE:g}; "
                         f"nothing written")
    return worst


def check_onnx(model: torch.nn.Module, path: Path, shape: torch.Size) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": "not installed (pip install 'bagoftricks[onnx]'): the file was not checked"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diff = _compare(model, lambda x: session.run(None, {name: x.numpy()})[0], shape, "the ONNX model")
    return {"onnxruntime": ort.__version__, "max_abs_diff": diff, "checked_batches": list(BATCHES)}


def check_exported(model: torch.nn.Module, path: Path, shape: torch.Size) -> dict:
    module = torch.export.load(str(path)).module()
    diff = _compare(model, module, shape, "the exported program")
    return {"max_abs_diff": diff, "checked_batches": list(BATCHES)}
