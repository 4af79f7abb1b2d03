import pytest
import torch
from torch import nn

from bagoftricks.models import build_model, count_params_macs, residual_last_bns


@pytest.mark.parametrize("size,final", [(28, 3), (32, 3)])
def test_shapes_and_groups(size, final):
    m = build_model("airbench", 10, in_channels=1, width=8)
    assert m.stem.weight.shape == (8, 1, 2, 2)
    assert [g.conv2.out_channels for g in (m.layer1, m.layer2, m.layer3)] == [8, 32, 32]
    x = torch.randn(2, 1, size, size)
    assert m.layer3(m.layer2(m.layer1(m.stem_act(m.stem(x))))).shape[-1] == final
    assert m(x).shape == (2, 10)
    assert residual_last_bns(m) == []                       # no residual connections
    assert isinstance(m.layer1.act1, nn.GELU)               # the preset's activation
    assert isinstance(build_model("airbench", activation="silu").layer1.act1, nn.SiLU)  # relu = the default: GELU


def test_default_width_and_cost():
    m = build_model("airbench", 10, in_channels=3)
    assert m.layer3.conv2.out_channels == 256
    params, macs = count_params_macs(m, (3, 32, 32))
    assert 1.5e6 < params < 2.5e6 and 1e8 < macs < 5e8


def test_whiten_stem_is_frozen_and_options_are_checked():
    m = build_model("airbench", 10, in_channels=3, stem="whiten")
    assert not m.stem.weight.requires_grad and m.stem.weight.shape == (24, 3, 2, 2)
    assert build_model("airbench").stem.weight.requires_grad
    with pytest.raises(ValueError, match="stem"):
        build_model("airbench", stem="pca")
    with pytest.raises(ValueError, match="not an option"):
        build_model("resnet20", stem="whiten")
    with pytest.raises(ValueError, match="not an option"):
        build_model("airbench", variant="D")


def test_the_stem_bias_trains_for_its_epochs_then_stays(tmp_path):
    from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
    from bagoftricks.engine import train
    from tests.engine.conftest import tiny
    r = tiny("model.arch=airbench", "model.width=4", "model.stem_bias_epochs=1", "train.epochs=2",
             "train.keep_checkpoints=3")
    train(r, tmp_path / "run", progress=False)
    first, second = (load_checkpoint(p)["model"]["stem.bias"] for p in list_checkpoints(tmp_path / "run")[-2:])
    assert first.abs().sum() > 0            # trained in epoch 1 (it starts at 0)
    assert torch.equal(first, second)       # frozen from epoch 2 on


def test_dirac_starts_each_3x3_conv_as_the_identity_on_its_first_channels():
    from bagoftricks.models import build_model
    m = build_model("airbench", 10, 1, width=4, dirac=True)
    for conv in (m.layer1.conv1, m.layer2.conv1, m.layer2.conv2):
        w = conv.weight
        k = min(w.shape[0], w.shape[1])
        x = torch.randn(2, w.shape[1], 6, 6)
        assert torch.allclose(torch.nn.functional.conv2d(x, w[:k], padding=1), x[:, :k])
