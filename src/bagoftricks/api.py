"""The Python face of bagoftricks: what a notebook needs, with `import bagoftricks` alone.

    recipe = bagoftricks.load_recipe("recipes/fmnist/all.yaml", ["train.epochs=1"])
    run = bagoftricks.train(recipe, "runs/quick")            # -> Run: folder, metrics, top1, load_model()
    model = run.load_model()                                  # -> LoadedModel: .predict(images, topk)
    bagoftricks.evaluate(run.folder)                          # {"top1": ..., "top5": ...}
    bagoftricks.export(run.folder, "onnx", "quick.onnx")
    bagoftricks.build_model("resnet50d", num_classes=10)      # timm's names beside ours
    bagoftricks.list_models("resnet50*", variants=True)

Each function here is a thin call of the module that does the work (engine, deploy, transfer,
ablate, report); nothing here imports torch until a function that needs it is called.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bagoftricks.errors import UsageError
from bagoftricks.files import read_json_object, read_jsonl
from bagoftricks.recipe import Recipe

__all__ = ["Run", "build_model", "evaluate", "export", "list_models", "load_model", "load_recipe", "make_report",
           "run_ablation", "run_transfer", "train"]


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe from a YAML file (or a shipped recipe's name, e.g. "fmnist/fast-3min"), with
    "section.field=value" overrides; None is the paper's §2 baseline. Validated: a bad value is a
    RecipeError naming the field."""
    from bagoftricks import recipe as brecipe
    return brecipe.validate(brecipe.load(path, list(overrides)))


def _recipe(recipe: Recipe | str | Path, overrides: Sequence[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        from bagoftricks import recipe as brecipe
        return brecipe.validate(brecipe.apply_overrides(recipe, list(overrides)))
    return load_recipe(recipe, overrides)


@dataclass(frozen=True)
class Run:
    """A run folder and what it holds: the recipe it trained, its per-epoch metrics and final numbers.

    `Run(folder)` opens any finished or unfinished run folder; `train` and `run_transfer` return one."""
    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        if not (self.folder / "recipe.yaml").is_file():
            raise UsageError(f"{self.folder} is not a run folder (no recipe.yaml)")

    @property
    def recipe(self) -> Recipe:
        from bagoftricks import recipe as brecipe
        return brecipe.load(self.folder / "recipe.yaml")

    @property
    def metrics(self) -> list[dict]:
        """One record per epoch (metrics.jsonl): epoch, lr, train_loss, val_top1, ... as the run wrote them."""
        return read_jsonl(self.folder / "metrics.jsonl")

    @property
    def final(self) -> dict:
        """The last epoch's record with the run's wall seconds (final.json); {} while the run is not finished."""
        path = self.folder / "final.json"
        return read_json_object(path) if path.is_file() else {}

    @property
    def finished(self) -> bool:
        return bool(self.final)

    @property
    def top1(self) -> float | None:
        """The final test top-1 in % (classification runs), None when not evaluated or not finished."""
        return self.final.get("val_top1")

    @property
    def top5(self) -> float | None:
        return self.final.get("val_top5")

    @property
    def wall_seconds(self) -> float | None:
        return self.final.get("wall_seconds")

    def load_model(self, device: str = "cpu", ema: bool = False):
        """The run's classifier (its newest valid checkpoint) as a LoadedModel: `.predict(images, topk)`."""
        return load_model(self.folder, device=device, ema=ema)

    def __repr__(self) -> str:
        done = f"top-1 {self.top1:.2f} %" if self.top1 is not None else ("finished" if self.finished else "unfinished")
        return f"Run({str(self.folder)!r}, {done})"


def train(recipe: Recipe | str | Path, out: str | Path, *, overrides: Sequence[str] = (), resume: bool = False,
          progress: bool | None = None) -> Run:
    """Train a recipe (a Recipe, a YAML path or a shipped recipe's name) into the new run folder `out`;
    resume=True continues the run in `out` with the recipe saved there. progress: None = a bar on a
    terminal only, False = never, True = always. Returns the Run."""
    from bagoftricks import recipe as brecipe
    from bagoftricks.engine.loop import train as train_recipe
    out = Path(out)
    r = brecipe.load(out / "recipe.yaml") if resume else _recipe(recipe, overrides)
    train_recipe(r, out, resume=resume, progress=progress)
    return Run(out)


def evaluate(checkpoint: str | Path, *, data_root: str | None = None, overrides: Sequence[str] = (),
             device: str = "auto", ema: bool = False, tta: str | None = None) -> dict:
    """Top-1/top-5 of a run folder or checkpoint on its test split (or on `data_root`, or with data.*
    overrides), rebuilt from its own recipe: {"top1", "top5", "loss", "images", ...}."""
    from bagoftricks.engine.inference import evaluate_checkpoint
    return evaluate_checkpoint(checkpoint, data_root=data_root, overrides=list(overrides), device=device,
                               use_ema=ema, tta=tta)


def load_model(path: str | Path, device: str = "cpu", ema: bool = False):
    """A trained classifier (a run folder, a checkpoint, or a model folder: "local-dir:DIR", "hf-hub:ORG/NAME[@REV]")
    with its evaluation transform and class names:
    `.predict(uint8 images [B, C, H, W], topk=5)` -> [(class, probability), ...] per image; `.model` is
    the torch module in eval mode, `.transform` its preprocessing, `.classes` the names."""
    from bagoftricks.engine.inference import load_model as load
    return load(path, device=device, use_ema=ema)


def build_model(name: str, num_classes: int = 1000, in_channels: int = 3, **options: Any):
    """A model of the zoo, initialised as the paper does (Xavier): our names (`resnet50` with
    variant="A" by default, the paper's baseline) and timm's variant names (`resnet50d` = ResNet-50-D,
    `resnet50c` = C; timm's plain `resnet50` is our B). Options: see bagoftricks.models.build_model."""
    from bagoftricks.models import build_model as build
    return build(name, num_classes, in_channels, **options)


def list_models(filter: str = "", variants: bool = False) -> list[str]:
    """The names `build_model` takes, matching the shell-style `filter` ("resnet*"; "" = all); variants=True
    adds the ResNet variant names (resnet50a ... resnet50d)."""
    from bagoftricks.models.catalog import list_models as presets
    from bagoftricks.models.catalog import variant_names
    names = presets() + (variant_names() if variants else [])
    return sorted(n for n in names if not filter or fnmatch.fnmatchcase(n, filter))


def export(run: str | Path, format: str, out: str | Path, *, ema: bool = False, force: bool = False) -> dict:
    """Write a run's model as `format` (safetensors, onnx, torch.export, timm, torchvision) to `out`, checked
    where it can be run; returns what was written (see `bagoftricks export --help`)."""
    from bagoftricks.deploy.export import export_run
    return export_run(run, format, out, use_ema=ema, force=force)


def run_transfer(recipe: Recipe | str | Path, out: str | Path, *, task: str | None = None,
                 overrides: Sequence[str] = (), resume: bool = False, progress: bool | None = None) -> Run:
    """Train a detection (task="detect") or segmentation ("segment") recipe into `out` (§6); returns the Run,
    whose final numbers are map_50/map or miou/pixel_acc."""
    from bagoftricks import recipe as brecipe
    from bagoftricks.transfer.loop import run_transfer as run
    out = Path(out)
    if resume:
        r = brecipe.load(out / "recipe.yaml")
    else:
        r = _recipe(recipe, [*overrides, *([f"transfer.task={task}"] if task else [])])
    run(r, out, resume=resume, progress=progress)
    return Run(out)


def run_ablation(spec: str | Path, out: str | Path, *, jobs: int = 1, seeds: Sequence[int] | None = None,
                 overrides: Sequence[str] = (), only: Sequence[str] = ()) -> int:
    """Run an ablation spec (a ladder or grid x seeds) into the sweep folder `out`, skipping finished cells;
    returns 0 when every cell finished, 1 when any failed. `make_report(out)` renders it."""
    from bagoftricks.ablate.spec import load_spec
    from bagoftricks.ablate.sweep import run_sweep
    return run_sweep(load_spec(spec), out, jobs=jobs, seeds=tuple(seeds) if seeds else None, extra=tuple(overrides),
                     only=tuple(only))


def make_report(sweeps: str | Path | Sequence[str | Path], out: str | Path | None = None,
                title: str | None = None) -> Path:
    """The report page (Markdown + HTML, figures) of one or more sweep folders; returns the Markdown file."""
    from bagoftricks import report
    dirs = [sweeps] if isinstance(sweeps, (str, Path)) else list(sweeps)
    return Path(report.make_report(dirs, out, title)["markdown"])
