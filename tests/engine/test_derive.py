"""engine.derive: the values a recipe gives (precision, evaluation framing, eval batch), and engine.setup."""
import pytest
import torch

from bagoftricks import recipe
from bagoftricks.engine import derive, setup


def test_every_precision_has_an_autocast_rule():
    assert set(derive.AUTOCAST_DTYPES) | {"fp32"} == set(recipe.PRECISIONS)
    cpu = torch.device("cpu")
    for p in recipe.PRECISIONS:
        with derive.autocast(p, cpu):
            y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert y.dtype == derive.AUTOCAST_DTYPES.get(p, torch.float32)


def test_evaluation_frames_the_image_as_training_did():
    """Pad-and-crop trains on the whole image: evaluation resizes the whole image, no 0.875 centre crop."""
    base = ["data.name=synthetic", "data.image_size=12", "data.synthetic_samples=16", "train.device=cpu"]
    for augment, ratio in (("paper", 0.875), ("small", 1.0), ("none", 1.0)):
        r = recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*base, f"data.augment={augment}"]))
        assert derive.eval_crop_ratio(r) == ratio
        tf = setup.build_data(r, torch.device("cpu"), setup.bdist.DistInfo(), train=False).eval_transform
        assert tf.crop_ratio == ratio
    whole = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    assert tf(whole).shape == (2, 3, 12, 12)
    r = recipe.apply_overrides(recipe.Recipe(), ["data.augment=small", "data.crop_ratio=0.9"])
    with pytest.raises(recipe.RecipeError, match="data.crop_ratio"):
        recipe.validate(r)


def test_eval_batch_size_defaults_to_twice_the_training_batch():
    r = recipe.apply_overrides(recipe.Recipe(), ["train.batch_size=48"])
    assert derive.eval_batch_size(r) == 96
    assert derive.eval_batch_size(recipe.apply_overrides(r, ["train.eval_batch_size=7"])) == 7


@pytest.mark.parametrize("native", [True, False])
def test_emulated_bf16_is_named_in_a_warning(monkeypatch, native):
    from bagoftricks.engine.setup import precision_note
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cpu = torch.device("cpu")
    note = precision_note("bf16", cpu)
    assert (note == "") == native
    if not native:
        assert note.startswith("train.precision: bf16 is emulated") and "train.precision=fp32" in note
    assert precision_note("fp32", cpu) == "" and precision_note("bf16", torch.device("meta")) == ""
