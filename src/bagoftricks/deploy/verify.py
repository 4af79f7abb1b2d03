"""An exported model run against the PyTorch model it came from, on the same random inputs.

Two batch sizes (1 and 3, neither the export's example batch of 2) show that the batch axis is
dynamic. The rule, per logit b of PyTorch and a of the export, with B the largest |logit| of the same
image:

    |a - b| <= RTOL * (|b| + B)          RTOL = 1e-3

a relative tolerance plus an absolute one that scales with the image's logits. Why relative: fp32
rounding error grows with the activations, so an absolute bound refuses correct exports of models
whose logits are large (a ResNet-50-D stopped after 2 steps, BN statistics still at their start, has
logits ~1e20 and an ONNX file within 2e-7 of them). Why the image's largest logit and not each
logit's own size: a logit near 0 beside large ones carries the rounding error of the large ones.
Why 1e-3: measured at fp32 (benchmarks/export_tolerance.py, benchmarks/README.md "Export checks"),
onnxruntime differs from PyTorch by up to 7.6e-5 of the image's largest logit (ResNet-50-D, trained
BN statistics), torch.export by 0; a wrong export (a missing op, a BN in training mode, a wrong key)
is off by O(1). It is also the rtol torch.onnx's own verification uses.

Images whose PyTorch logits are not all finite cannot be compared and are left out; that, and logits
above HUGE, are warnings naming the likely cause (BatchNorm statistics not yet trained), not refusals.
An export whose logits are not finite where PyTorch's are fails. A failing check raises RunFailure
and the caller keeps no file. onnxruntime is an optional extra: without it the ONNX file is written
unchecked and the report says so.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from bagoftricks.errors import RunFailure

RTOL = 1e-3    # of (|logit| + the image's largest |logit|); measured worst at fp32: 7.6e-5 (module docstring)
HUGE = 1e4     # |logit| above this: no trained classifier's (softmax is one-hot long before)
BATCHES = (1, 3)
UNTRAINED = ("the model's BatchNorm running statistics look untrained (a run stopped after a few steps keeps "
             "them near their start, so activations grow through every block)")


def _inputs(shape: torch.Size) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, *shape[1:], generator=g) for b in BATCHES]


def agreement(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float, int]:
    """(largest |a - b|, largest |a - b| / (|b| + B), images compared) over the images whose reference
    logits are all finite (module docstring)."""
    ref, got = ref.double().flatten(1), got.double().flatten(1)
    if got.shape != ref.shape:
        return float("inf"), float("inf"), 0
    rows = torch.isfinite(ref).all(dim=1)
    ref, got = ref[rows], got[rows]
    if not len(ref):
        return 0.0, 0.0, 0
    diff = (got - ref).abs().nan_to_num(nan=float("inf"))
    scale = ref.abs() + ref.abs().amax(dim=1, keepdim=True)
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / scale)
    return diff.max().item(), rel.max().item(), len(ref)


def _notes(refs: list[torch.Tensor]) -> list[str]:
    ref = torch.cat([r.double().flatten(1) for r in refs])
    bad = int((~torch.isfinite(ref).all(dim=1)).sum())
    if bad:
        return [f"PyTorch's logits are not finite for {bad} of {len(ref)} check images, which were not compared: "
                f"{UNTRAINED}"]
    top = ref.abs().max().item()
    return [f"PyTorch's logits reach {top:.3g}, compared relative to that scale: {UNTRAINED}"] if top > HUGE else []


def compare(model: torch.nn.Module, run: Callable, shape: torch.Size, what: str) -> dict:
    """Run ``run`` (the export) and ``model`` on BATCHES random inputs of ``shape``; the check's numbers, a
    RunFailure when they disagree (module docstring), a warning for untrained-looking logits."""
    worst_abs, worst_rel, compared, refs = 0.0, 0.0, 0, []
    with torch.no_grad():
        for x in _inputs(shape):
            ref = model(x).float()
            got = torch.as_tensor(run(x)).float()
            a, r, n = agreement(ref, got)
            worst_abs, worst_rel, compared = max(worst_abs, a), max(worst_rel, r), compared + n
            refs.append(ref)
    if not worst_rel <= RTOL:
        raise RunFailure(f"{what} disagrees with PyTorch: logits differ by up to {worst_abs:.3g}, {worst_rel:.3g} of "
                         f"their scale > {RTOL:g} (|a - b| <= {RTOL:g} * (|b| + the image's largest |b|)); "
                         f"nothing written")
    notes = _notes(refs)
    for note in notes:
        warnings.warn(f"{what}: {note}", stacklevel=2)
    out = {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "checked_images": compared,
           "checked_batches": list(BATCHES)}
    return {**out, "warnings": notes} if notes else out


def check_onnx(model: torch.nn.Module, path: Path, shape: torch.Size) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": "not installed (pip install 'bagoftricks[onnx]'): the file was not checked"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    check = compare(model, lambda x: session.run(None, {name: x.numpy()})[0], shape, "the ONNX model")
    return {"onnxruntime": ort.__version__, **check}


def check_exported(model: torch.nn.Module, path: Path, shape: torch.Size) -> dict:
    module = torch.export.load(str(path)).module()
    return compare(model, module, shape, "the exported program")


def check_module(model: torch.nn.Module, other: torch.nn.Module, shape: torch.Size, what: str) -> dict:
    """A model of another library (or ours, read back from the file) loaded with the exported weights."""
    return compare(model, other.eval(), shape, what)
