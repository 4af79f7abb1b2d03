"""load_pretrained: our runs (EMA or raw), torchvision/timm files, the head rule, and clear errors."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from bagoftricks.checkpoint import save_checkpoint
from bagoftricks.errors import BadInput, WeightsError
from bagoftricks.models import build_model, load_pretrained


def _small(num_classes=4, seed=0, variant="D"):
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes, 1, variant=variant, width=4)


def _run(tmp_path, model, ema=None):
    """A run folder holding one checkpoint of `model` (and EMA weights when given)."""
    state = {"model": model.state_dict(), "recipe": {}, "epoch": 1, "step": 0}
    if ema is not None:
        params = {k: v for k, v in ema.state_dict().items() if v.is_floating_point()}
        state["ema"] = {"params": params, "buffers": {k: v for k, v in ema.state_dict().items() if k not in params}}
    save_checkpoint(tmp_path / "run", state, 1, 2)
    return tmp_path / "run"


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_run_folder_gives_its_raw_weights_and_says_so(tmp_path):
    src = _small(seed=1)
    run = _run(tmp_path, src)
    dst = _small(seed=2)
    line = load_pretrained(dst, run)
    assert _same(src, dst)
    assert "raw weights of step-000000001.pt" in line and "no EMA" in line


def test_a_run_with_ema_gives_the_ema_weights(tmp_path):
    src, ema = _small(seed=1), _small(seed=3)
    dst = _small(seed=2)
    line = load_pretrained(dst, _run(tmp_path, src, ema))
    assert _same(ema, dst) and not _same(src, dst)
    assert "EMA weights" in line


def test_a_new_class_count_reinitialises_the_head_only(tmp_path):
    src = _small(num_classes=4, seed=1)
    run = _run(tmp_path, src)
    dst = _small(num_classes=6, seed=2)
    head_before = dst.fc.weight.clone()
    line = load_pretrained(dst, run)
    assert torch.equal(dst.fc.weight, head_before)  # the model's own fresh head
    assert torch.equal(dst.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert "classifier head fc re-initialised (4 classes in the file, 6 here)" in line


def test_any_other_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    run = _run(tmp_path, _small())
    wide = build_model("resnet20", 4, 1, variant="D", width=8)
    with pytest.raises(WeightsError, match=r"conv1\.0\.weight has shape \[2, 1, 3, 3\] in the file and "
                                           r"\[4, 1, 3, 3\] in resnet20") as e:
        load_pretrained(wide, run)
    assert isinstance(e.value, BadInput)


def test_missing_keys_are_an_error(tmp_path):
    run = _run(tmp_path, _small(variant="A"))  # single stem: no conv1.0 / conv1.3 ...
    with pytest.raises(WeightsError, match="key conv1.0.weight is in resnet20 but not in the file"):
        load_pretrained(_small(variant="D"), run)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_a_torchvision_state_dict_fine_tunes_a_new_head(tmp_path, suffix):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)  # 1000 classes
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        save_file(tv.state_dict(), str(path))
    else:
        torch.save(tv.state_dict(), path)
    ours = build_model("resnet18", 5, variant="B")
    line = load_pretrained(ours, path)
    assert torch.equal(ours.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert "torchvision resnet18 layout" in line and "1000 classes in the file, 5 here" in line


def test_trainer_wrappers_and_ddp_prefixes_are_unwrapped(tmp_path):
    src = _small(seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    # resnet20 has no library counterpart: a foreign file is refused with the formats that work
    with pytest.raises(WeightsError, match="no torchvision or timm counterpart.*bagoftricks run folder"):
        load_pretrained(_small(seed=2), path)
    tv = torchvision.models.resnet18(weights=None, num_classes=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)
    ours = build_model("resnet18", 3, variant="B")
    load_pretrained(ours, path)
    assert _same(tv, ours)


@pytest.mark.parametrize("name,content,say", [
    ("missing.pth", None, "not found"),
    ("w.onnx", b"x", "unknown weights format"),
    ("w.pth", b"not a zip", "cannot be read as a PyTorch weights file"),
    ("w.safetensors", b"garbage", "not a readable safetensors file"),
])
def test_bad_files_are_named(tmp_path, name, content, say):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=say) as e:
        load_pretrained(_small(), path)
    assert name in str(e.value)


def test_a_file_that_is_no_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_pretrained(_small(), path)


def test_a_head_for_other_classes_is_reinitialised_even_when_its_shape_fits(tmp_path):
    src = _small(num_classes=4, seed=1)
    state = {"model": src.state_dict(), "recipe": {}, "classes": ["a", "b", "c", "d"]}
    save_checkpoint(tmp_path / "run", state, 1, 2)
    same, other = _small(seed=2), _small(seed=3)
    assert "re-initialised" not in load_pretrained(same, tmp_path / "run", classes=["a", "b", "c", "d"])
    assert torch.equal(same.fc.weight, src.fc.weight)
    head = other.fc.weight.clone()
    line = load_pretrained(other, tmp_path / "run", classes=["w", "x", "y", "z"])
    assert "classifier head fc re-initialised (the file's classes are others)" in line
    assert torch.equal(other.fc.weight, head) and torch.equal(other.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
