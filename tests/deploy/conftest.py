"""Small trained runs for the export and predict tests (one epoch on synthetic images)."""
import pytest

from bagoftricks import recipe
from bagoftricks.engine import train


def run_of(out, *overrides):
    base = {"model": {"arch": "resnet20", "width": 4, "variant": "D"},
            "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 32, "augment": "small",
                     "num_classes": 4},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}
    r = recipe.validate(recipe.apply_overrides(recipe.from_dict(base), list(overrides)))
    train(r, out, progress=False)
    return out


@pytest.fixture(scope="package")
def small_run(tmp_path_factory):
    return run_of(tmp_path_factory.mktemp("small") / "run", "tricks.ema_decay=0.5")


@pytest.fixture(scope="package")
def r50d_run(tmp_path_factory):
    """A ResNet-50-D with 10 classes: the model of the timm export's promise."""
    return run_of(tmp_path_factory.mktemp("r50d") / "run", "model.arch=resnet50", "model.width=0",
                  "data.num_classes=10", "data.image_size=32", "data.synthetic_samples=16")
