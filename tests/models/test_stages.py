"""Stage features: every ResNet of both families gives its stages' true channels and strides."""

import pytest
import torch

from bagoftricks.models import build_model, features, list_models

RESNETS = [m for m in list_models() if m.startswith(("resnet", "resnext", "seresne"))]
# The 224 px family's deep presets are slow to build; keep one per block type and width rule.
FAST = {"resnet101", "resnet152", "resnext101_32x8d", "resnet110", "resnet56", "resnet44"}


@pytest.mark.parametrize("arch", [a for a in RESNETS if a not in FAST])
@pytest.mark.parametrize("variant", ["A", "B", "C", "D"])
def test_stage_shapes_and_strides_match_a_forward(arch, variant):
    torch.manual_seed(0)
    model = build_model(arch, 7, 3, variant=variant).eval()
    backbone = features(model)
    size = 64
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, size, size))
    assert list(outs) == [s.name for s in backbone.info]
    for info, out in zip(backbone.info, outs.values()):
        assert out.shape[1] == info.channels
        assert size // out.shape[-1] == info.stride and out.shape[-1] * info.stride == size
    # The last stage is what the classifier pools: the same tensor, the same weights.
    with torch.no_grad():
        x = torch.randn(1, 3, size, size)
        assert torch.equal(list(backbone(x).values())[-1], model.forward_features(x))
    assert backbone.channels[-1] == model.num_features


def test_known_strides():
    assert features(build_model("resnet50", 10, variant="D")).strides == [4, 8, 16, 32]
    assert features(build_model("resnet50", 10, variant="D")).channels == [256, 512, 1024, 2048]
    assert features(build_model("resnet20", 10, 1, variant="D")).strides == [1, 2, 4]
    assert features(build_model("resnet18", 10)).channels == [64, 128, 256, 512]


def test_shares_weights_with_the_classifier():
    model = build_model("resnet20", 10, 1)
    backbone = features(model)
    with torch.no_grad():
        model.layer1[0].conv1.weight.add_(1.0)
    assert backbone.layer1[0].conv1.weight is model.layer1[0].conv1.weight


def test_non_resnet_is_refused():
    with pytest.raises(ValueError, match="ResNet families only.*MobileNet"):
        features(build_model("mobilenet_v1", 10, width_mult=0.25))
