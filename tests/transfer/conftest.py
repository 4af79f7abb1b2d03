import pytest

from bagoftricks import recipe

TINY = {
    "model": {"arch": "resnet20", "variant": "D", "width": 4},
    "data": {"name": "fmnist_scenes", "image_size": 32, "flip": 0.5},
    "optim": {"lr": 0.02},
    "schedule": {"kind": "cosine"},
    "transfer": {"train_scenes": 8, "test_scenes": 4, "fpn_channels": 16},
    "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "log_every_steps": 1, "threads": 1},
}


def tiny(*overrides: str) -> recipe.Recipe:
    return recipe.validate(recipe.apply_overrides(recipe.from_dict(TINY), list(overrides)))


@pytest.fixture(scope="session")
def backbone_run(tmp_path_factory):
    """A one-epoch `bagoftricks train` run of the tiny backbone on the two-class part (~80) of the first 400
    (1 channel, like the scenes; two classes keep its evaluation at 2000 test images)."""
    from bagoftricks.engine import train
    r = recipe.from_dict({"model": {"arch": "resnet20", "variant": "D", "width": 4},
                          "data": {"name": "fashion_mnist", "image_size": 28, "augment": "small", "train_limit": 400,
                                   "class_subset": [0, 1]},
                          "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "threads": 1}})
    out = tmp_path_factory.mktemp("backbone") / "run"
    train(recipe.validate(r), out, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two spinning threads make these tiny convs 100x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
