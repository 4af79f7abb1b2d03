"""`bagoftricks export RUN --format F --out FILE`: a run's model in the formats deployments use.

    safetensors    our weights and a metadata block (arch, variant, classes, mean/std, input size, crop
                   ratio, ...); `model.pretrained` and `predict`-like tools read it back (and so does the check)
    torchvision    a state dict in torchvision's key layout (ResNet-B, ResNeXt-B), for
                   torchvision.models.<name>(num_classes=K).load_state_dict(...), checked by doing that
    timm           a state dict in timm's key layout (resnet*, resnet*c, resnet*d, SE/ResNeXt presets),
                   checked in timm.create_model(<name>, ...) when timm is installed
    onnx           opset ONNX_OPSET, dynamic batch axis; checked with onnxruntime against PyTorch
    torch.export   a .pt2 ExportedProgram with a dynamic batch axis, checked the same way
    hf             a folder in timm's Hugging Face Hub layout (deploy/hf.py), checked in timm and read back

Every check compares logits by deploy/verify.py's rule (relative to each image's largest logit).

torch.export, not TorchScript: TorchScript is in maintenance only in current PyTorch, while
torch.export is the graph capture that torch's ONNX exporter, AOTInductor and ExecuTorch build on; its
.pt2 loads with ``torch.export.load(path).module()`` and no bagoftricks code.

Every file (folder) is written under a temporary name in the target's folder and renamed when complete and
checked, so a failure (an unsupported model, a full disk, a check that disagrees) leaves no partial file.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from bagoftricks.deploy import verify
from bagoftricks.engine.derive import eval_crop_ratio, normalisation, recipe_model
from bagoftricks.engine.inference import LoadedModel, load_model
from bagoftricks.errors import RunFailure, UsageError
from bagoftricks.models import convert, load_pretrained
from bagoftricks.models.pretrained import OUR_FORMAT

ONNX_OPSET = 18  # the first opset torch's (torch.export-based) ONNX exporter writes; onnxruntime >= 1.14 runs it
LIBRARY_FORMATS = ("torchvision", "timm")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` for writers that want a file name; renamed to ``target`` when the
    body completes, removed when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the suffix: readers such as torch.export.load and read_weights go by it
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def metadata(lm: LoadedModel) -> dict[str, str]:
    """What a user of the weights needs to run them as we evaluated them (safetensors metadata: strings)."""
    r = lm.recipe
    in_channels = _in_channels(lm.model)
    mean, std = normalisation(r, in_channels)
    meta = {"format": OUR_FORMAT, "arch": r.model.arch, "variant": r.model.variant,
            "num_classes": len(lm.classes), "in_channels": in_channels, "image_size": r.data.image_size,
            "crop_ratio": eval_crop_ratio(r), "mean": list(mean), "std": list(std), "scale": "0-255",
            "classes": lm.classes, "model": dict(vars(r.model)), "checkpoint": lm.checkpoint.name}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _in_channels(model: torch.nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return int(first.in_channels)


def _state(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in lm.model.state_dict().items()}


def _shape(lm: LoadedModel) -> torch.Size:
    size = lm.recipe.data.image_size
    return torch.Size([2, _in_channels(lm.model), size, size])


def _write_safetensors(lm: LoadedModel, out: Path) -> dict:
    from safetensors.torch import save
    with atomic_path(out) as tmp:
        tmp.write_bytes(save(_state(lm), metadata=metadata(lm)))
        back = recipe_model(lm.recipe, len(lm.classes), _in_channels(lm.model))
        load_pretrained(back, tmp, lm.classes)
        return verify.check_module(lm.model, back, _shape(lm), "the safetensors file read back")


def _library_model(cp: convert.Counterpart, num_classes: int, channels: int) -> torch.nn.Module | None:
    """The other library's model of ``cp`` for ``channels``-channel images; None when it is not installed."""
    if cp.library == "timm":
        try:
            import timm
        except ImportError:
            return None
        return timm.create_model(cp.name, num_classes=num_classes, in_chans=channels)
    import torchvision
    model = getattr(torchvision.models, cp.name)(num_classes=num_classes)
    if channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, model.conv1.out_channels, 7, stride=2, padding=3, bias=False)
    return model


def _write_library(lm: LoadedModel, out: Path, library: str) -> dict:
    cp = convert.counterparts(lm.model, library)[0]
    state = convert.to_library(_state(lm), cp)
    k, c = len(lm.classes), _in_channels(lm.model)
    theirs = _library_model(cp, k, c)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
        if theirs is None:
            check = {library: f"not installed (pip install {library}): the file was not loaded into it"}
        else:
            try:
                theirs.load_state_dict(torch.load(tmp, weights_only=True), strict=True)
            except RuntimeError as e:
                raise RunFailure(f"{library} {cp.name} does not load the file ({str(e).splitlines()[0]}); "
                                 f"nothing written") from None
            check = verify.check_module(lm.model, theirs, _shape(lm), f"{library}'s {cp.name} with the file")
    how = f"timm.create_model({cp.name!r}, num_classes={k}" + (f", in_chans={c})" if c != 3 else ")") \
        if library == "timm" else f"torchvision.models.{cp.name}(num_classes={k})" + \
        (f" with conv1 for {c} input channels" if c != 3 else "")
    return {"loads_into": how, **check}


def _example(lm: LoadedModel) -> torch.Tensor:
    return torch.randn(_shape(lm), generator=torch.Generator().manual_seed(0))


def _write_onnx(lm: LoadedModel, out: Path) -> dict:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout
        program = torch.onnx.export(lm.model, (_example(lm),), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=["images"], output_names=["logits"], dynamic_shapes=({0: batch},))
    with atomic_path(out) as tmp:
        program.save(str(tmp))
        check = verify.check_onnx(lm.model, tmp, _shape(lm))
    return {"opset": ONNX_OPSET, "input": "images [batch, C, H, W], normalised", "output": "logits", **check}


def _write_torch_export(lm: LoadedModel, out: Path) -> dict:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(lm.model, (_example(lm),), dynamic_shapes=({0: batch},))
    with atomic_path(out) as tmp:
        torch.export.save(program, str(tmp))
        check = verify.check_exported(lm.model, tmp, _shape(lm))
    return check


def _check_out(out: Path, fmt: str, force: bool) -> None:
    if fmt == "hf":
        from bagoftricks.deploy.hf import check_target
        return check_target(out, force)
    if out.exists() and not force:
        raise UsageError(f"--out: {out} exists; pass --force to replace it")
    if out.is_dir():
        raise UsageError(f"--out: {out} is a folder; give a file name (only --format hf writes a folder)")
    return None


def _size(out: Path) -> int:
    return sum(p.stat().st_size for p in out.iterdir()) if out.is_dir() else out.stat().st_size


def export_run(run: str | Path, fmt: str, out: str | Path, use_ema: bool = False, force: bool = False) -> dict:
    """Write the model of ``run`` (a run folder, checkpoint or model folder) to ``out`` as ``fmt``; returns what
    was done and what the check measured."""
    out = Path(out)
    _check_out(out, fmt, force)
    writers = {"safetensors": _write_safetensors, "onnx": _write_onnx, "torch.export": _write_torch_export,
               "torchvision": lambda m, o: _write_library(m, o, "torchvision"),
               "timm": lambda m, o: _write_library(m, o, "timm"), "hf": lambda m, o: _write_hf(m, o, use_ema)}
    if fmt not in writers:
        raise UsageError(f"--format: unknown format {fmt!r}; choose one of {', '.join(writers)}")
    lm = load_model(run, device="cpu", use_ema=use_ema)
    extra = writers[fmt](lm, out)
    return {"format": fmt, "out": str(out), "bytes": _size(out), "checkpoint": str(lm.checkpoint),
            "weights": "ema" if use_ema else "raw", **extra}


def _write_hf(lm: LoadedModel, out: Path, use_ema: bool) -> dict:
    from bagoftricks.deploy.hf import write_hf
    return write_hf(lm, out, use_ema)


def cmd_export(args) -> int:
    print(json.dumps(export_run(args.source, args.format, args.out, use_ema=args.ema, force=args.force)))
    return 0
