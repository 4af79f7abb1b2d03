"""engine.setup: what a run builds once."""
import torch

from bagoftricks import recipe
from bagoftricks.engine import setup


def test_every_precision_has_an_autocast_rule():
    assert set(setup.AUTOCAST_DTYPES) | {"fp32"} == set(recipe.PRECISIONS)
    cpu = torch.device("cpu")
    for p in recipe.PRECISIONS:
        with setup.autocast(p, cpu):
            y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert y.dtype == setup.AUTOCAST_DTYPES.get(p, torch.float32)


def test_eval_batch_size_defaults_to_twice_the_training_batch():
    r = recipe.apply_overrides(recipe.Recipe(), ["train.batch_size=48"])
    assert setup.eval_batch_size(r) == 96
    assert setup.eval_batch_size(recipe.apply_overrides(r, ["train.eval_batch_size=7"])) == 7
