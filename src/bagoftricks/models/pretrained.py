"""Start a built model from weights trained elsewhere: ``load_pretrained(model, path) -> str``.

``path`` is one of our run folders (its newest valid checkpoint) or checkpoints — the EMA weights
when the run kept them, else the raw weights — a safetensors file of ``bagoftricks export``, a
torchvision/timm state-dict file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``) converted to our
keys by the tables of :mod:`convert`, or a model folder in timm's Hugging Face Hub layout
(``local-dir:DIR``, ``hf-hub:ORG/NAME[@REV]``, see :mod:`hub`), whose config.json names its layout.

Two parts may differ from the model. The classifier head (the model's last ``nn.Linear``): when its
shape does not match (another ``num_classes``), or the file names other classes than the caller's
``classes``, the model keeps its own freshly initialised head. The input convolution: weights for
another number of input channels are adapted by :mod:`adapt`'s rule (RGB weights summed for grey
images). The returned log line says what was done. Any other missing, extra or differently shaped
tensor is a ``WeightsError`` naming the file, the key and both shapes; nothing is skipped silently.

``folder_model(path)`` builds the model a model folder describes and loads it (``load_model`` of a
folder, predict and eval on one).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from bagoftricks.checkpoint import read_checkpoint
from bagoftricks.errors import CheckpointError, WeightsError
from bagoftricks.models import convert, hub
from bagoftricks.models.adapt import adapt_input_conv
from bagoftricks.models.registry import build_model

__all__ = ["SUFFIXES", "FolderModel", "classifier_head", "folder_model", "load_pretrained", "read_weights"]

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
OUR_FORMAT = "bagoftricks"  # the "format" entry of our safetensors metadata
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")  # dicts other trainers save weights under


class Weights(NamedTuple):
    state: dict[str, torch.Tensor]
    ours: bool   # our key layout (run folder, checkpoint, our safetensors export)
    what: str    # for the log: which weights of which file
    classes: list[str] | None = None  # the class names the file records (our checkpoints and exports)
    layout: str = ""  # for the log, when the file says its layout (model folders)


def classifier_head(model: nn.Module) -> str:
    """The module name of the model's classifier: its last ``nn.Linear`` ('fc' for every zoo model)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise WeightsError(f"{type(model).__name__} has no nn.Linear classifier head")
    return names[-1]


def _our_checkpoint(path: Path) -> Weights:
    ck = read_checkpoint(path, ema=None)  # the EMA weights when the run kept them: the better start
    classes = list(ck.state.get("classes") or []) or None
    return Weights(ck.weights, True, ck.which, classes)


def _safetensors(path: Path) -> Weights:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    ours = meta.get("format") == OUR_FORMAT
    classes = json.loads(meta["classes"]) if ours and "classes" in meta else None
    return Weights(state, ours, "bagoftricks export" if ours else "safetensors state dict", classes)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file: a flat dict, or one under a trainer's key ('state_dict', ...)."""
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _torch_file(path: Path) -> Weights:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a bad file fails in many ways; the message names it
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{path}: cannot be read as a PyTorch weights file ({first})") from None
    if isinstance(obj, dict) and "model" in obj and "recipe" in obj:
        return _our_checkpoint(path)
    return Weights(_unwrap(obj, path), False, "state dict")


def _folder(path: str | Path) -> tuple[Weights, hub.FolderConfig, Path]:
    """The weights of a model folder, in our keys (converted from timm's when its config says so), its config and
    the local folder."""
    folder = hub.resolve(path)
    cfg = hub.read_config(folder)
    file = hub.weights_file(folder)
    w = _safetensors(file) if file.suffix == ".safetensors" else _torch_file(file)
    state, layout = w.state, "our layout"
    if cfg.timm_name:
        cp = next(c for c in convert.COUNTERPARTS if c.library == "timm" and c.name == cfg.timm_name)
        state, layout = convert.from_library(state, cp), f"timm {cp.name} layout"
    what = "model folder" + (f", {cfg.weights}" if cfg.weights else "")
    return Weights(state, True, what, cfg.classes, layout), cfg, folder


def read_weights(path: str | Path) -> Weights:
    """The tensors of a run folder, checkpoint, safetensors or state-dict file, or model folder (see module
    docstring)."""
    if hub.is_model_folder(path):
        return _folder(path)[0]
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p}: not found")
    try:
        if p.is_dir():
            return _our_checkpoint(p)
        if p.suffix == ".safetensors":
            return _safetensors(p)
        if p.suffix in SUFFIXES:
            return _torch_file(p)
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
    raise WeightsError(f"{p}: unknown weights format; give a run folder or a {', '.join(SUFFIXES)} file")


def _convert(model: nn.Module, state: dict, path: Path) -> tuple[dict, str]:
    """A foreign state dict in our keys: the counterpart table whose renamed keys fit the model best."""
    own = set(model.state_dict())
    try:
        candidates = convert.counterparts(model)
    except WeightsError as e:
        raise WeightsError(f"{path} is a torchvision/timm {_kind(state)}, but {e}") from None
    best = None
    for cp in candidates:
        renamed = convert.from_library(state, cp)
        misfit = len(own ^ set(renamed))
        if best is None or misfit < best[0]:
            best = (misfit, renamed, f"{cp.library} {cp.name} layout")
    return best[1], best[2]


def _kind(state: dict) -> str:
    return f"state dict ({len(state)} tensors)"


def _check_keys(model: nn.Module, state: dict, path: Path) -> None:
    own = model.state_dict()
    arch = getattr(model, "arch", type(model).__name__)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        k, where = (missing[0], f"is in {arch} but not in the file") if missing else \
            (extra[0], f"is in the file but not in {arch}")
        more = len(missing) + len(extra) - 1
        raise WeightsError(f"{path}: key {k} {where}" + (f" (and {more} more mismatched keys)" if more else ""))
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape) and not k.startswith(classifier_head(model) + "."):
            raise WeightsError(f"{path}: {k} has shape {list(state[k].shape)} in the file and {list(t.shape)} in "
                               f"{arch}")


def _fit(model: nn.Module, state: dict, path: Path, why: str = "") -> tuple[dict, str]:
    """``state`` checked key by key against the model; the head is replaced by the model's own when its shape
    differs or ``why`` (other classes) is given."""
    _check_keys(model, state, path)
    own, head = model.state_dict(), classifier_head(model)
    head_keys = [k for k in own if k.startswith(head + ".")]
    if any(state[k].shape != own[k].shape for k in head_keys):
        why = f"{state[head + '.weight'].shape[0]} classes in the file, {own[head + '.weight'].shape[0]} here"
    if not why:
        return dict(state), ""
    return {**state, **{k: own[k] for k in head_keys}}, f"; classifier head {head} re-initialised ({why})"


def load_pretrained(model: nn.Module, path: str | Path, classes: list[str] | None = None) -> str:
    """Load the weights in ``path`` into the built ``model`` (in place); returns the line for the run log.

    ``classes``: the model's class names. When the file records other ones (our runs and exports do),
    the head is re-initialised even if its shape fits: a head trained for other classes is no start.
    """
    p = str(path) if hub.parse_spec(path) is not None else Path(path)
    w = read_weights(p)
    state, layout = (w.state, w.layout or "our layout") if w.ours else _convert(model, w.state, Path(p))
    state, adapted = adapt_input_conv(model, state, p)
    other = classes is not None and w.classes is not None and list(classes) != list(w.classes)
    state, note = _fit(model, state, p, "the file's classes are others" if other else "")
    model.load_state_dict(state, strict=True)
    return f"pretrained weights from {p} ({w.what}, {layout}): {len(state)} tensors{adapted}{note}"


class FolderModel(NamedTuple):
    """The model a model folder describes, with its weights, and what its config.json says."""

    model: nn.Module          # built by the zoo, loaded strictly, on the CPU
    config: hub.FolderConfig  # classes, preprocessing, the model section, the recipe (folders we wrote)
    folder: Path              # the local folder (an hf-hub: spec's snapshot in the Hub cache)
    what: str                 # for a log: where the weights came from


def folder_model(path: str | Path) -> FolderModel:
    """Build the model of a model folder (``local-dir:``, ``hf-hub:`` or a folder holding config.json) and
    load its weights strictly; a WeightsError naming the folder when they do not fit."""
    w, cfg, folder = _folder(path)
    options = {k: v for k, v in cfg.model.items() if k in _BUILD_OPTIONS}
    try:
        model = build_model(cfg.model["arch"], cfg.num_classes, cfg.in_channels, **options)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{folder / 'config.json'}: the model it describes cannot be built ({e})") from None
    _check_keys(model, w.state, folder)
    try:
        model.load_state_dict(w.state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{folder}: the weights do not fit {cfg.architecture} ({str(e).splitlines()[-1].strip()})"
                           ) from None
    return FolderModel(model, cfg, folder, f"{path} ({w.what}, {w.layout})")


# the options of our model section that build_model takes (sync_bn, pretrained, freeze are the run's)
_BUILD_OPTIONS = ("variant", "width", "init", "activation", "se_reduction", "groups", "width_per_group", "drop_path",
                  "width_mult", "stem")
