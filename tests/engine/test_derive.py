"""engine.derive: the values a recipe gives (precision, evaluation framing, eval batch), and engine.setup."""
import pytest
import torch

from bagoftricks import recipe
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.engine import derive, loop, setup
from bagoftricks.errors import UsageError


def test_every_precision_has_an_autocast_rule():
    assert set(derive.AUTOCAST_DTYPES) | {"fp32", "auto"} == set(recipe.PRECISIONS)  # auto: resolved to one of them
    cpu = torch.device("cpu")
    for p in set(recipe.PRECISIONS) - {"auto"}:
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
    # fp16 is a GPU's precision: emulated on every CPU (classification and transfer runs warn alike)
    assert precision_note("fp16", cpu).startswith("train.precision: fp16 autocast is emulated on a CPU")
    assert precision_note("fp16", torch.device("meta")) == ""


def test_auto_precision_is_what_the_device_computes_natively(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    auto = recipe.apply_overrides(recipe.Recipe(), ["train.precision=auto"])
    for native, on_cpu, on_gpu in ((True, "bf16", "bf16"), (False, "fp32", "fp16")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda native=native: native)
        assert derive.native_precision(cpu) == on_cpu and derive.native_precision(gpu) == on_gpu
        assert derive.resolve_precision(auto, cpu).train.precision == on_cpu
    assert derive.native_precision(torch.device("meta")) == "fp32"
    fixed = recipe.apply_overrides(recipe.Recipe(), ["train.precision=fp16"])
    assert derive.resolve_precision(fixed, cpu) is fixed


TINY = ["data.name=synthetic", "data.image_size=16", "data.synthetic_samples=64", "data.num_classes=4",
        "model.arch=resnet8", "model.width=4", "train.batch_size=16", "data.augment=small", "train.device=cpu",
        "train.epochs=1"]


def test_an_auto_precision_run_records_its_choice_and_is_that_precisions_run(tmp_path, monkeypatch):
    # on a CPU without native bf16, "auto" is fp32: the same run, bit for bit, as train.precision=fp32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    auto = recipe.validate(recipe.apply_overrides(recipe.Recipe(), [*TINY, "train.precision=auto"]))
    loop.train(auto, tmp_path / "auto", progress=False)
    loop.train(recipe.apply_overrides(auto, ["train.precision=fp32"]), tmp_path / "fp32", progress=False)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / d)[-1])["model"] for d in ("auto", "fp32"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert recipe.load(tmp_path / "auto" / "recipe.yaml").train.precision == "fp32"
    env = (tmp_path / "auto" / "env.json").read_text()
    assert '"asked": {' in env and '"train.precision": "auto"' in env and '"asked"' not in (
        tmp_path / "fp32" / "env.json").read_text()
    log = (tmp_path / "auto" / "run.log").read_text()
    assert "train.precision auto: fp32 on cpu: the CPU has no native bf16" in log
    # the auto recipe continues its folder (train.resume: auto), whatever this machine would choose now
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    again = loop.train(recipe.apply_overrides(auto, ["train.resume=auto"]), tmp_path / "auto", progress=False)
    assert again["epoch"] == 1
    with pytest.raises(UsageError, match="train.precision: 'fp32' there, 'bf16' here"):
        loop.train(recipe.apply_overrides(auto, ["train.resume=auto", "train.precision=bf16"]), tmp_path / "auto",
                   progress=False)
