import pytest
import torch

from bagoftricks import recipe
from bagoftricks.engine import classify, train
from bagoftricks.errors import RecipeError
from bagoftricks.files import read_jsonl
from bagoftricks.tricks.progressive_resize import epoch_size, resize_batch
from tests.engine.conftest import tiny


def test_epoch_size_follows_the_schedule_then_the_final_size():
    assert [epoch_size((16, 20), e, 28) for e in range(4)] == [16, 20, 28, 28]
    assert epoch_size((), 0, 28) == 28


def test_resize_batch():
    x = torch.rand(2, 3, 16, 16)
    assert resize_batch(x, 16) is x
    y = resize_batch(x, 8)
    assert y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y.mean(), x.mean(), atol=1e-2, rtol=0)   # antialiased: the mean is kept


def test_prepare_batch_resizes_the_early_epochs_only():
    r = tiny("data.progressive_sizes=[8, 12]", "train.epochs=3")
    x, y = torch.rand(4, 3, 16, 16), torch.arange(4)
    sizes = [classify.prepare_batch(r, x, y, 4, e, torch.Generator(), False)[0].shape[-1] for e in range(3)]
    assert sizes == [8, 12, 16]


def test_a_run_trains_through_the_sizes(tmp_path):
    train(tiny("data.progressive_sizes=[8]"), tmp_path / "r", progress=False)
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert len(recs) == 2 and all(0 <= m["val_top1"] <= 100 for m in recs)


@pytest.mark.parametrize("sets,match", [
    (["data.progressive_sizes=[4]"], "data.progressive_sizes"),
    (["data.progressive_sizes=[20]"], "data.progressive_sizes"),
    (["data.progressive_sizes=[8, 12]"], "data.progressive_sizes"),   # 2 epochs: the last must be full size
    (["data.progressive_sizes=[a]"], "image sizes in pixels"),
])
def test_bad_schedules_name_the_field(sets, match):
    with pytest.raises(RecipeError, match=match):
        tiny(*sets)


def test_a_shorter_run_names_train_epochs():
    r = recipe.from_dict({"data": {"image_size": 28, "progressive_sizes": [16, 20]}, "train": {"epochs": 3}})
    with pytest.raises(RecipeError, match="train.epochs"):
        recipe.validate(recipe.apply_overrides(r, ["train.epochs=2"]), changed={"train.epochs"})
