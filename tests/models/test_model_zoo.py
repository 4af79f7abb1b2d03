"""Sweep every registered model: it builds, runs forward and backward, and is measured."""

import pytest
import torch

from bagoftricks.models import MODELS, build_model, count_params_macs, default_image_size, list_models

# the smallest sizes that work
SMALL_INPUT = {"airbench": 28, "resnet_small": 32, "resnet": 32, "mobilenet": 32, "inception": 75}
NATIVE = {"airbench": 32, "resnet_small": 32, "resnet": 224, "mobilenet": 224, "inception": 299}


def test_registry():
    names = list_models()
    assert names == sorted(MODELS)
    expected = {f"resnet{d}" for d in (18, 34, 50, 101, 152, 8, 14, 20, 32, 44, 56, 110)} | {
        "resnext50_32x4d", "resnext101_32x8d", "seresnet50", "seresnext50_32x4d", "mobilenet_v1", "inception_v3",
        "airbench",
    }
    assert set(names) == expected
    for name in names:
        assert MODELS[name].name == name
        assert default_image_size(name) == NATIVE[MODELS[name].family]
    assert default_image_size("resnet50") == 224 and default_image_size("resnet20") == 32
    assert default_image_size("inception_v3") == 299 and default_image_size("mobilenet_v1") == 224
    with pytest.raises(ValueError, match="arch"):
        default_image_size("vgg16")


@pytest.mark.parametrize("arch", list_models())
def test_forward_backward(arch):
    family = MODELS[arch].family
    size = SMALL_INPUT[family]
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7)
    assert model.arch == arch
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 5])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", list_models())
def test_measured_at_native_size(arch):
    with torch.device("meta"):
        model = build_model(arch)
    size = default_image_size(arch)
    params, macs = count_params_macs(model, (3, size, size))
    assert params == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        logits = model(torch.empty(1, 3, size, size))
    assert logits.shape == (1, 1000)
    assert 1e7 < macs < 2e10


@pytest.mark.parametrize("arch", ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
@pytest.mark.parametrize("variant", "AD")
def test_small_family_grayscale_28px(arch, variant):
    """Fashion-MNIST: one channel, 28 px (28 → 28 → 14 → 7)."""
    torch.manual_seed(0)
    model = build_model(arch, 10, in_channels=1, variant=variant)
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None if variant == "A" else model.conv1[0].weight.grad is not None


@pytest.mark.parametrize("arch", ["resnet50", "resnext50_32x4d", "mobilenet_v1", "inception_v3"])
@pytest.mark.parametrize("channels", [1, 4])
def test_other_input_channels(arch, channels):
    size = default_image_size(arch)
    with torch.device("meta"):
        model = build_model(arch, 10, in_channels=channels, variant="D" if "res" in arch else "A")
        assert model(torch.empty(2, channels, size, size)).shape == (2, 10)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == channels


def test_every_exported_name_resolves():
    import bagoftricks.models as models

    for name in models.__all__:
        assert getattr(models, name) is not None, name
