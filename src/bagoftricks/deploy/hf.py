"""`bagoftricks export RUN --format hf --out DIR`: a model folder in timm's Hugging Face Hub layout.

    DIR/config.json          what timm.create_model("local-dir:DIR") reads (models/hub.py has the format)
    DIR/model.safetensors    the weights, in timm's key layout for the architectures timm has
    DIR/README.md            the model card: the run's recipe, its tricks, its measured top-1, the commands

For a model timm has (``models/convert.py``'s timm rows), the folder is checked twice before it is
kept: ``timm.create_model("local-dir:<folder>", pretrained=True)`` (when timm is installed) and our own
reader (``models.folder_model``, what ``model.pretrained: local-dir:DIR``, ``predict`` and
``load_model`` use) must both give the run's logits (deploy/verify.py's rule). A model timm lacks is
written the same way under the architecture ``bagoftricks:<name>`` with our keys, and checked with our
reader. The folder is written as a temporary folder beside DIR and renamed into place; an existing DIR
is replaced only with --force, and only when it is a model folder (or empty).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from bagoftricks import recipe as brecipe
from bagoftricks.engine.derive import eval_crop_ratio, normalisation
from bagoftricks.engine.inference import LoadedModel
from bagoftricks.errors import UsageError, WeightsError
from bagoftricks.files import read_json_object, read_jsonl
from bagoftricks.models import classifier_head, convert, folder_model, hub
from bagoftricks.models.adapt import input_conv

from bagoftricks.deploy.verify import check_module


def check_target(out: Path, force: bool) -> None:
    """Refuse an existing --out without --force, and any existing folder that is not a model folder."""
    if not out.exists():
        return
    if not force:
        raise UsageError(f"--out: {out} exists; pass --force to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise UsageError(f"--out: {out} is a folder that is not a model folder (no config.json); it is not replaced, "
                         f"even with --force")


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed to ``target`` when the body completes (an existing
    ``target`` is moved aside first and removed after), removed when the body fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timm_counterpart(lm: LoadedModel) -> convert.Counterpart | None:
    try:
        return convert.counterparts(lm.model, "timm")[0]
    except WeightsError:
        return None


def _config(lm: LoadedModel, cp: convert.Counterpart | None, use_ema: bool) -> dict:
    r, c = lm.recipe, lm.in_channels
    mean, std = normalisation(r, c)
    head = getattr(lm.model, classifier_head(lm.model))
    weights = f"{'EMA' if use_ema else 'raw'} weights of {lm.checkpoint.name}"
    return hub.make_config(dict(vars(r.model)), cp.name if cp else "", len(lm.classes), head.in_features, c,
                           r.data.image_size, eval_crop_ratio(r), mean, std, lm.classes,
                           input_conv(lm.model).removesuffix(".weight"), classifier_head(lm.model),
                           {"recipe": brecipe.to_dict(r), "weights": weights})


def write_hf(lm: LoadedModel, out: Path, use_ema: bool = False) -> dict:
    """Write ``lm`` as a model folder ``out`` (module docstring); returns what the checks measured."""
    from safetensors.torch import save_file
    cp = _timm_counterpart(lm)
    state = {k: v.detach().cpu().contiguous() for k, v in lm.model.state_dict().items()}
    if cp is not None:
        state = convert.to_library(state, cp)
    config = _config(lm, cp, use_ema)
    with atomic_folder(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "README.md").write_text(model_card(lm, config, cp, use_ema, out))
        checks = _check(lm, tmp, cp)
    how = f"timm.create_model('local-dir:{out}', pretrained=True)" if cp else \
        f"bagoftricks.load_model('local-dir:{out}') (timm has no {config['architecture'].removeprefix(hub.OURS)})"
    return {"architecture": config["architecture"], "loads_into": how, "files": sorted(os.listdir(out)), **checks}


def _check(lm: LoadedModel, folder: Path, cp: convert.Counterpart | None) -> dict:
    shape = torch.Size([2, lm.in_channels, lm.recipe.data.image_size, lm.recipe.data.image_size])
    ours = check_module(lm.model, folder_model(f"local-dir:{folder}").model, shape, "the model folder read back")
    out = {"bagoftricks": ours}
    if cp is None:
        return out
    try:
        import timm
    except ImportError:
        return {**out, "timm": "not installed (pip install timm): not loaded with timm"}
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return {**out, "timm": {"version": timm.__version__, **check_module(lm.model, theirs, shape,
                                                                       "timm's model of the folder")}}


# ----------------------------------------------------------------------------------------- model card
def _run_folder(lm: LoadedModel) -> Path | None:
    ck = lm.checkpoint
    return ck.parent.parent if ck.parent.name == "checkpoints" else None


def _measured(run: Path | None, use_ema: bool) -> str:
    """The run's last evaluation of the exported weights, as a sentence."""
    if run is None:
        return "not recorded (the weights came from a checkpoint file outside a run folder)"
    key = "ema_val_top1" if use_ema else "val_top1"
    recs = [r for r in read_jsonl(run / "metrics.jsonl") if key in r]
    if not recs:
        return "not recorded (the run never evaluated these weights)"
    last = recs[-1]
    tta = f", {last[key.replace('top1', 'tta_top1')]:.2f} % with TTA" if key.replace("top1", "tta_top1") in last else ""
    return f"**{last[key]:.2f} %** top-1 ({last.get(key.replace('top1', 'top5'), float('nan')):.2f} % top-5{tta}) " \
           f"on the run's test split ({last.get('val_images', '?')} images), after epoch {last.get('epoch', '?')}"


def _commands(lm: LoadedModel, run: Path | None, out: Path, use_ema: bool) -> str:
    argv = read_json_object(run / "env.json").get("argv", []) if run is not None else []
    lines = []
    if argv and Path(str(argv[0])).name in ("bagoftricks", "__main__.py"):
        lines.append(f"bagoftricks {shlex.join(str(a) for a in argv[1:])}   # how the run was trained")
    lines.append("bagoftricks train --recipe recipe.yaml --out runs/again   # recipe.yaml: the recipe below")
    source = run if run is not None else lm.checkpoint
    lines.append(f"bagoftricks export {source} --format hf --out {out}{' --ema' if use_ema else ''}")
    return "\n".join(lines)


def _tricks(r: brecipe.Recipe) -> str:
    changed = brecipe.diff(brecipe.Recipe(), r)
    rows = [f"`{k}: {b}`" for k, _, b in changed if k.startswith(("tricks.", "schedule."))]
    return ", ".join(rows) if rows else "none (the paper's baseline training)"


def model_card(lm: LoadedModel, config: dict, cp: convert.Counterpart | None, use_ema: bool, out: Path) -> str:
    """README.md of the folder: what the model is, how well it did, how to load it and how it was made."""
    r, run = lm.recipe, _run_folder(lm)
    arch = f"{r.model.arch}-{r.model.variant}" if r.model.arch.startswith("res") else r.model.arch
    pre = config["pretrained_cfg"]
    size = "×".join(str(v) for v in pre["input_size"])
    library = "timm" if cp else "bagoftricks"
    timm_use = f"""
```python
import timm
model = timm.create_model("hf-hub:ORG/NAME", pretrained=True)   # or "local-dir:{out}"
```
""" if cp else ""
    return f"""---
library_name: {library}
pipeline_tag: image-classification
tags:
- image-classification
- bagoftricks{chr(10) + '- timm' if cp else ''}
---

# {arch} on {r.data.name}

A {arch} ({'timm `' + cp.name + '`' if cp else 'a bagoftricks model timm does not have'}) trained with
bagoftricks on `{r.data.name}`: {len(lm.classes)} classes, {size} input images
({pre['interpolation']} resize, centre crop {pre['crop_pct']:.3g}, mean {_fmt(pre['mean'])} and std
{_fmt(pre['std'])} on the 0-1 scale). Exported from the {config['bagoftricks']['weights']}.

| | |
|---|---|
| measured | {_measured(run, use_ema)} |
| classes | {', '.join(lm.classes)} |
| tricks | {_tricks(r)} |

## Use

ORG/NAME is the Hub repository the folder was uploaded to.
{timm_use}
```python
import bagoftricks
m = bagoftricks.load_model("hf-hub:ORG/NAME")   # or "local-dir:{out}"; m.predict(uint8 images, topk=5)
```

```bash
bagoftricks predict --checkpoint hf-hub:ORG/NAME photos/
```

## How it was made

```bash
{_commands(lm, run, out, use_ema)}
```

## Recipe

```yaml
{brecipe.dump(r).rstrip()}
```
"""


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"
