"""model.pretrained across input channels: the input convolution adapted by one rule, named in the log."""
from __future__ import annotations

import pytest
import torch
import torchvision

from bagoftricks.checkpoint import save_checkpoint
from bagoftricks.errors import WeightsError
from bagoftricks.models import adapt_channels, build_model, load_pretrained
from bagoftricks.models.adapt import adapt_input_conv, input_conv


def _saved(tmp_path, model):
    save_checkpoint(tmp_path / "run", {"model": model.state_dict(), "recipe": {}}, 1, 1)
    return tmp_path / "run"


def test_the_rule_sums_for_one_channel_and_repeats_and_rescales_for_more():
    w = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)  # [[0, 1, 2], [3, 4, 5]]
    grey, how = adapt_channels(w, 1)
    assert grey.flatten().tolist() == [3.0, 12.0] and "summed" in how
    four, how = adapt_channels(w, 4)
    assert torch.allclose(four[:, :, 0, 0], torch.tensor([[0, 1, 2, 0], [3, 4, 5, 3]]) * 0.75)
    assert "repeated and scaled by 3/4" in how
    rgb, _ = adapt_channels(grey, 3)  # grey weights for RGB: each channel a third
    assert torch.allclose(rgb.sum(dim=1, keepdim=True), grey)


def test_torchvision_rgb_weights_start_a_grey_resnet18_as_they_see_its_grey_rendering(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()  # 3-channel stem, 1,000 classes: torchvision's ImageNet shapes
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    ours = build_model("resnet18", 1000, 1, variant="B").eval()
    line = load_pretrained(ours, tmp_path / "r18.pth")
    assert "input conv conv1.weight adapted from 3 to 1 channels (summed over the file's 3)" in line
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(grey), tv(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_the_log_names_the_adapted_stem_and_the_new_head(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    line = load_pretrained(build_model("resnet18", 5, 1, variant="B"), tmp_path / "r18.pth")
    assert "adapted from 3 to 1 channels" in line and "classifier head fc re-initialised (1000 classes" in line


@pytest.mark.parametrize("arch,options,key", [
    ("resnet20", {"variant": "A", "width": 4}, "conv1.weight"),
    ("resnet20", {"variant": "C", "width": 4}, "conv1.0.weight"),
    ("resnet20", {"variant": "D", "width": 4}, "conv1.0.weight"),
    ("mobilenet_v1", {"width_mult": 0.25}, "features.0.0.weight"),
])
def test_every_stem_adapts_to_more_channels_keeping_a_grey_image_s_response(tmp_path, arch, options, key):
    torch.manual_seed(1)
    rgb = build_model(arch, 3, 3, **options).eval()
    six = build_model(arch, 3, 6, **options).eval()  # e.g. two RGB frames stacked
    assert input_conv(six) == key
    line = load_pretrained(six, _saved(tmp_path, rgb))
    assert f"input conv {key} adapted from 3 to 6 channels (the file's 3 repeated and scaled by 3/6)" in line
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(six(grey.expand(-1, 6, -1, -1)), rgb(grey.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-5)


def test_the_inception_stem_is_found_and_adapted():
    """Inception-V3 (24M parameters) is built once: the rule is the same, the point is its stem's key."""
    model = build_model("inception_v3", 3, 1)
    assert input_conv(model) == "stem.conv1a.0.weight"
    rgb = torch.randn(32, 3, 3, 3)
    state, note = adapt_input_conv(model, {**model.state_dict(), "stem.conv1a.0.weight": rgb}, "f.pth")
    assert torch.allclose(state["stem.conv1a.0.weight"], rgb.sum(1, keepdim=True))
    assert note == "; input conv stem.conv1a.0.weight adapted from 3 to 1 channels (summed over the file's 3)"


def test_the_airbench_stem_depends_on_the_channels_and_stays_an_error(tmp_path):
    run = _saved(tmp_path, build_model("airbench", 10, 3, width=8))
    with pytest.raises(WeightsError, match=r"3-channel images and the model takes 1; the airbench network's stem"):
        load_pretrained(build_model("airbench", 10, 1, width=8), run)


def test_a_stem_of_another_width_is_not_adapted_but_refused(tmp_path):
    run = _saved(tmp_path, build_model("resnet20", 4, 3, variant="A", width=4))
    with pytest.raises(WeightsError, match=r"conv1\.weight has shape \[4, 3, 3, 3\] in the file and \[8, 1, 3, 3\]"):
        load_pretrained(build_model("resnet20", 4, 1, variant="A", width=8), run)
