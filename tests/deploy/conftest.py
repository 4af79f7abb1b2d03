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


GREY_CLASSES = ["Sandal", "Shirt", "Bag"]


@pytest.fixture(scope="package")
def grey_r18d(tmp_path_factory):
    """ResNet-18-D at timm's widths for 1-channel 32 px images (Fashion-MNIST's statistics), 3 named classes, BN
    statistics as trained (checkpoint_run)."""
    return checkpoint_run(tmp_path_factory.mktemp("r18d") / "run", {"arch": "resnet18", "variant": "D"}, GREY_CLASSES)


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """One intra-op thread: these tests run small batches, where on a shared 2-core machine a second spinning
    thread costs more than it gives. Restored after each test."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def r50d_run(tmp_path_factory):
    """A ResNet-50-D with 10 classes: the model of the timm export's promise."""
    return run_of(tmp_path_factory.mktemp("r50d") / "run", "model.arch=resnet50", "model.width=0",
                  "data.num_classes=10", "data.image_size=32", "data.synthetic_samples=16")


def checkpoint_run(out, model: dict, classes: list[str], *, in_channels: int = 1, image_size: int = 32,
                   trained: bool = True, seed: int = 0):
    """A run folder holding one checkpoint of a model built from the model section `model` (no training, so
    the big models stay cheap). trained=True sets its BatchNorm statistics from random images, as training
    does, so its logits have a trained model's scale; False leaves them at their start."""
    import torch

    from bagoftricks.checkpoint import save_checkpoint
    from bagoftricks.engine.derive import recipe_model
    r = recipe.validate(recipe.from_dict({"model": model, "data": {"name": "fashion_mnist", "image_size": image_size,
                                                                   "augment": "small"}}))
    torch.manual_seed(seed)
    net = recipe_model(r, len(classes), in_channels)
    if trained:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a cumulative average over the batches below
        with torch.no_grad():
            for _ in range(3):
                net(torch.randn(16, in_channels, image_size, image_size))
    state = {"model": net.state_dict(), "recipe": recipe.to_dict(r), "num_classes": len(classes),
             "in_channels": in_channels, "classes": classes, "epoch": 1, "step": 1}
    save_checkpoint(out, state, 1, 1)
    return out
