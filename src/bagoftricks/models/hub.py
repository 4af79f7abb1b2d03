"""Model folders as the Hugging Face Hub keeps them (timm's layout), and where they come from.

    local-dir:DIR              a folder on disk (a plain DIR holding config.json is read the same way)
    hf-hub:ORG/NAME[@REV]      a Hub repository, through huggingface_hub and its cache

A model folder is what ``timm.create_model("hf-hub:...")`` and ``"local-dir:..."`` load:

    config.json          architecture, num_classes, num_features, global_pool, model_args (in_chans),
                         pretrained_cfg (input_size, interpolation, crop_pct, crop_mode, mean/std on the
                         0-1 scale, first_conv, classifier, label_names) and our section "bagoftricks"
                         (the model section, the recipe, which weights) that timm ignores
    model.safetensors    the weights: timm's key layout when the architecture is timm's, else ours
    README.md            the model card

An architecture timm has (the timm rows of ``convert``'s table) is written under timm's name and
read back through that table; one timm lacks is written as ``bagoftricks:<name>`` and only we read it.
A folder someone else wrote is read when its architecture is in the table and its model_args are
ones that do not change the network (``MODEL_ARGS``); anything else is refused with what it holds.

Nothing here imports torch. The Hub is reached only for ``hf-hub:`` specs, by ``hf_hub_download``:
its cache (``HF_HUB_CACHE``, or ``HF_HOME``/hub, read when called) first, the network only when
``HF_HUB_OFFLINE`` is unset.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bagoftricks.errors import WeightsError
from bagoftricks.models import convert
from bagoftricks.models.catalog import split_variant

SOURCES = ("local-dir", "hf-hub")
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # the Hub's names, the first found is read
OURS = "bagoftricks:"            # the architecture prefix of a model timm lacks
SECTION = "bagoftricks"          # our part of config.json
# timm arguments a folder may set: the ones that leave the inference network as we build it (dropout rates act in
# training only; timm records num_classes, in_chans and global_pool itself), with the values that do
MODEL_ARGS = {"in_chans": None, "num_classes": None, "global_pool": ("avg",), "drop_rate": None, "drop_path_rate": None,
              "drop_block_rate": None}
INTERPOLATIONS = ("bilinear", "bicubic")  # resize filters of the evaluation transform
TIMM_DEFAULTS = {"crop_pct": 0.875, "interpolation": "bilinear", "crop_mode": "center",
                 "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}  # timm's, for keys a config omits


@dataclass(frozen=True)
class Spec:
    """A parsed ``local-dir:`` or ``hf-hub:`` name."""

    source: str
    name: str                   # the folder, or ORG/NAME
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.name}" + (f"@{self.revision}" if self.revision else "")


def parse_spec(text: str | os.PathLike) -> Spec | None:
    """The spec ``text`` names, or None for a plain path. A malformed ``hf-hub:`` name is a WeightsError."""
    text = str(text)
    source, sep, rest = text.partition(":")
    if not sep or source not in SOURCES:
        return None
    if not rest:
        what = "DIR" if source == "local-dir" else "ORG/NAME"
        raise WeightsError(f"{text}: nothing after '{source}:'; write {source}:{what}")
    if source == "local-dir":
        return Spec(source, rest)
    name, _, revision = rest.partition("@")
    if name.count("/") != 1 or not all(name.split("/")):
        raise WeightsError(f"{text}: a Hub repository is written hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return Spec(source, name, revision or None)


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model folder: a spec, or a folder holding config.json and no checkpoints/
    (a run folder is read as one)."""
    if parse_spec(path) is not None:
        return True
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not (p / "checkpoints").is_dir()


def resolve(path: str | os.PathLike) -> Path:
    """The local folder ``path`` names (an ``hf-hub:`` spec: its snapshot in the Hub cache, fetched when
    not cached and not offline)."""
    spec = parse_spec(path)
    if spec is not None and spec.source == "hf-hub":
        return _hub_snapshot(spec)
    folder = Path(spec.name if spec is not None else path)
    if not folder.is_dir():
        raise WeightsError(f"{path}: {'not found' if not folder.exists() else 'not a folder'}")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{path}: no config.json, so not a model folder (a timm/Hugging Face Hub layout: "
                           f"config.json and {' or '.join(WEIGHTS_FILES)})")
    return folder


# ------------------------------------------------------------------------------------------- the Hub
def _offline() -> bool:
    from huggingface_hub import constants
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.upper() in ("1", "ON", "YES", "TRUE")


def hub_cache() -> str | None:
    """The Hub cache folder the environment names now (HF_HUB_CACHE, else HF_HOME/hub), or None for
    huggingface_hub's default; read at each call, so a changed environment is honoured."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None


def _hub_file(spec: Spec, filename: str) -> Path | None:
    """``filename`` of the repository from the cache (or the Hub); None when the repository has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    offline = _offline()
    try:
        return Path(hf_hub_download(spec.name, filename, revision=spec.revision, cache_dir=hub_cache(),
                                    local_files_only=offline))
    except LocalEntryNotFoundError:
        if filename != "config.json":
            return None
        from huggingface_hub import constants
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise WeightsError(f"{spec}: not in the Hugging Face cache ({hub_cache() or constants.HF_HUB_CACHE}) and "
                           f"{why}; download it once where the network is reachable (`hf download {spec.name}`) "
                           f"or point HF_HUB_CACHE at a cache that holds it") from None
    except EntryNotFoundError:
        if filename == "config.json":
            raise WeightsError(f"{spec}: the repository has no config.json, so it is not a timm model") from None
        return None
    except Exception as e:  # noqa: BLE001 - repository/revision not found, HTTP and disk errors: one message
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{spec}: cannot be fetched from the Hugging Face Hub ({first})") from None


def _hub_snapshot(spec: Spec) -> Path:
    try:
        import huggingface_hub  # noqa: F401 - only to say it is missing
    except ImportError:
        raise WeightsError(f"{spec}: needs huggingface_hub (pip install huggingface_hub)") from None
    folder = _hub_file(spec, "config.json").parent
    if not any(_hub_file(spec, name) for name in WEIGHTS_FILES):
        raise WeightsError(f"{spec}: the repository has none of {', '.join(WEIGHTS_FILES)}"
                           + (" in the Hugging Face cache" if _offline() else ""))
    return folder


# ------------------------------------------------------------------------------------- config.json in
@dataclass(frozen=True)
class FolderConfig:
    """What a model folder's config.json says, in our terms."""

    architecture: str          # as written: timm's name, or bagoftricks:<name>
    model: dict[str, Any]      # our model section (arch, variant, and the options we wrote)
    timm_name: str             # timm's architecture when the weights are in its layout, else ''
    num_classes: int
    in_channels: int
    image_size: int
    crop_ratio: float
    interpolation: str
    mean: tuple[float, ...]    # per channel, on the 0..255 scale
    std: tuple[float, ...]
    classes: list[str]         # index = logit
    recipe: dict | None        # the run's recipe (folders we wrote), else None
    weights: str               # which weights of which run, for the log


def weights_file(folder: Path) -> Path:
    """The folder's weights file: the first of WEIGHTS_FILES that is there."""
    found = next((folder / n for n in WEIGHTS_FILES if (folder / n).is_file()), None)
    if found is None:
        raise WeightsError(f"{folder}: a model folder without weights (none of {', '.join(WEIGHTS_FILES)})")
    return found


def read_config(folder: Path) -> FolderConfig:
    """config.json of a model folder, checked; a WeightsError naming the file and the value otherwise."""
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise WeightsError(f"{path}: no 'architecture' (a timm model config names one)")
    pre = cfg.get("pretrained_cfg") or {}
    ours = cfg.get(SECTION) or {}
    model, timm_name = _model_section(cfg, ours, path)
    num_classes = int(cfg.get("num_classes", pre.get("num_classes", 0)) or 0)
    if num_classes < 1:
        raise WeightsError(f"{path}: num_classes is {num_classes}; a classifier folder has at least one class")
    in_channels, size = _input(cfg, pre, path)
    mean, std = (tuple(255.0 * float(v) for v in _per_channel(pre, k, in_channels, path)) for k in ("mean", "std"))
    return FolderConfig(cfg["architecture"], model, timm_name, num_classes, in_channels, size,
                        _crop_pct(pre, path), _interpolation(pre, path), mean, std,
                        _labels(cfg, pre, num_classes, path), ours.get("recipe"), str(ours.get("weights", "")))


def _model_section(cfg: dict, ours: dict, path: Path) -> tuple[dict, str]:
    arch = cfg["architecture"]
    timm = [c for c in convert.COUNTERPARTS if c.library == "timm" and c.name == arch]
    args = cfg.get("model_args") or {}
    extra = [f"{k}={v!r}" for k, v in args.items() if k not in MODEL_ARGS or v not in (MODEL_ARGS[k] or (v,))]
    if extra:
        raise WeightsError(f"{path}: model_args {', '.join(extra)} change the network in ways we do not build; "
                           f"those read are {', '.join(MODEL_ARGS)} (global_pool 'avg' only)")
    if args.get("num_classes") not in (None, cfg.get("num_classes", args.get("num_classes"))):
        raise WeightsError(f"{path}: model_args.num_classes {args['num_classes']} and num_classes "
                           f"{cfg.get('num_classes')} differ")
    if isinstance(ours.get("model"), dict):
        return dict(ours["model"]), timm[0].name if timm else ""
    if timm:
        return {"arch": timm[0].arch, "variant": timm[0].variant}, timm[0].name
    have = ", ".join(c.name for c in convert.COUNTERPARTS if c.library == "timm")
    raise WeightsError(f"{path}: architecture {arch!r} is not one we build (timm's {have}, or a folder written by "
                       f"`bagoftricks export --format hf`)")


def _input(cfg: dict, pre: dict, path: Path) -> tuple[int, int]:
    size = list(pre.get("input_size") or (3, 224, 224))
    channels = int((cfg.get("model_args") or {}).get("in_chans") or size[0])
    if len(size) != 3 or size[1] != size[2]:
        raise WeightsError(f"{path}: pretrained_cfg.input_size {size}: a square [C, H, H] is what we evaluate on")
    return channels, int(size[1])


def _per_channel(pre: dict, key: str, channels: int, path: Path) -> list[float]:
    values = list(pre.get(key) or TIMM_DEFAULTS[key])
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]  # the rule of data.dataset_stats: RGB statistics averaged
    if len(values) == 1:
        return values * channels
    raise WeightsError(f"{path}: pretrained_cfg.{key} has {len(values)} values for {channels}-channel images")


def _crop_pct(pre: dict, path: Path) -> float:
    mode = pre.get("crop_mode") or TIMM_DEFAULTS["crop_mode"]
    if mode != "center":
        raise WeightsError(f"{path}: pretrained_cfg.crop_mode {mode!r}; the evaluation transform crops the centre")
    pct = float(pre.get("crop_pct") or TIMM_DEFAULTS["crop_pct"])
    if not 0 < pct <= 1:
        raise WeightsError(f"{path}: pretrained_cfg.crop_pct must be in (0, 1], got {pct}")
    return pct


def _interpolation(pre: dict, path: Path) -> str:
    how = pre.get("interpolation") or TIMM_DEFAULTS["interpolation"]
    if how not in INTERPOLATIONS:
        raise WeightsError(f"{path}: pretrained_cfg.interpolation {how!r}; one of {', '.join(INTERPOLATIONS)}")
    return how


def _labels(cfg: dict, pre: dict, num_classes: int, path: Path) -> list[str]:
    names = cfg.get("label_names", pre.get("label_names"))
    if names is None:
        return [str(k) for k in range(num_classes)]
    if isinstance(names, dict):  # timm allows {index: name}
        names = [names.get(str(k), names.get(k, str(k))) for k in range(num_classes)]
    if len(names) != num_classes:
        raise WeightsError(f"{path}: {len(names)} label_names for {num_classes} classes")
    return [str(n) for n in names]


# ------------------------------------------------------------------------------------ config.json out
def make_config(model: dict, timm_name: str, num_classes: int, num_features: int, in_channels: int,
                image_size: int, crop_ratio: float, mean: tuple, std: tuple, classes: list[str],
                first_conv: str, classifier: str, ours: dict) -> dict:
    """config.json of a model folder. ``model``: our model section; ``timm_name``: timm's architecture
    ('' when timm lacks it); ``mean``/``std`` on the 0..255 scale (written on timm's 0-1 scale);
    ``first_conv`` and ``classifier``: module names in the weights' key layout; ``ours``: what else we
    keep (the recipe, which weights)."""
    letter = str(model.get("variant") or "").lower()
    name = model["arch"] + letter if letter and split_variant(model["arch"] + letter)[0] == model["arch"] else \
        model["arch"]
    pretrained_cfg = {
        "input_size": [in_channels, image_size, image_size], "fixed_input_size": False,
        "interpolation": "bilinear", "crop_pct": crop_ratio, "crop_mode": "center",
        "mean": [m / 255.0 for m in mean], "std": [s / 255.0 for s in std],
        "num_classes": num_classes, "first_conv": first_conv, "classifier": classifier, "label_names": list(classes),
    }
    cfg = {"architecture": timm_name or OURS + name, "num_classes": num_classes,
           "num_features": num_features}
    if timm_name:
        cfg["global_pool"] = "avg"
    return {**cfg, "model_args": {"in_chans": in_channels}, "pretrained_cfg": pretrained_cfg,
            SECTION: {"model": model, **ours}}
