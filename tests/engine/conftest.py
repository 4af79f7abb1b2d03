import pytest

from bagoftricks import recipe

TINY = {
    "model": {"arch": "resnet20", "width": 4},
    "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "small", "num_classes": 4},
    "optim": {"lr": 0.1},
    "schedule": {"kind": "cosine"},
    "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "log_every_steps": 1},
}


def tiny(*overrides: str) -> recipe.Recipe:
    return recipe.validate(recipe.apply_overrides(recipe.from_dict(TINY), list(overrides)))


@pytest.fixture
def tiny_recipe():
    return tiny
