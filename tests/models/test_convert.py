"""Conversion truth: another library's model with random weights, converted and loaded strictly into
ours, gives the same logits — and ours, converted back, into theirs. Not a test of names: of outputs."""
from __future__ import annotations

import pytest
import torch
import torchvision

from bagoftricks.errors import WeightsError
from bagoftricks.models import build_model, convert

try:
    import timm
except ImportError:  # the dev extra installs it; the torchvision cases run without it
    timm = None

# The truth test runs every table row up to depth 50 and one deeper D (its stage-1 rule); the deeper
# rows differ only in blocks per stage, and the meta-device test below checks every row's keys and shapes.
DEEP = {"resnet101", "resnet152", "resnet101c", "resnet152c", "resnet152d", "resnext101_32x8d"}
ROWS = [c for c in convert.COUNTERPARTS if c.name not in DEEP]


def _theirs(cp: convert.Counterpart, num_classes: int = 10) -> torch.nn.Module:
    if cp.library == "timm":
        if timm is None:
            pytest.skip("timm is not installed (pip install -e '.[dev]'): the timm cases are skipped")
        return timm.create_model(cp.name, num_classes=num_classes, pretrained=False)
    return getattr(torchvision.models, cp.name)(weights=None, num_classes=num_classes)


def _ours(cp: convert.Counterpart, num_classes: int = 10) -> torch.nn.Module:
    return build_model(cp.arch, num_classes, variant=cp.variant)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every float tensor random and non-trivial (no zero γ, no unit running statistics), so that a tensor
    loaded into the wrong place changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if k.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1 and k.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return model.eval()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("cp", ROWS, ids=lambda c: f"{c.library}-{c.name}")
def test_conversion_gives_the_same_logits_both_ways(cp):
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    theirs, ours = _randomise(_theirs(cp), 0), _ours(cp).eval()
    ours.load_state_dict(convert.from_library(theirs.state_dict(), cp), strict=True)
    a, b = _logits(theirs, x), _logits(ours, x)
    assert a.abs().max() > 0.1  # a real signal, not a network of zeros
    assert (a - b).abs().max().item() <= 1e-5
    # and back: our (other) random weights, converted to their layout, in their model
    _randomise(ours, 1)
    theirs.load_state_dict(convert.to_library(ours.state_dict(), cp), strict=True)
    a, b = _logits(ours, x), _logits(theirs, x)
    assert a.abs().max() > 0.1
    assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cp", convert.COUNTERPARTS, ids=lambda c: f"{c.library}-{c.name}")
def test_every_row_has_the_same_keys_and_shapes(cp):
    with torch.device("meta"):
        theirs, ours = _theirs(cp, 7), _ours(cp, 7)
    renamed = convert.from_library(theirs.state_dict(), cp)
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_the_timm_d_rule_is_needed():
    """Without the stage-1 renaming, timm's resnet50d does not load: the table carries a real difference."""
    cp = next(c for c in convert.COUNTERPARTS if c.name == "resnet50d")
    with torch.device("meta"):
        theirs, ours = _theirs(cp), _ours(cp)
    missing = set(ours.state_dict()) - set(theirs.state_dict())
    bn = {f"layer1.0.downsample.1.{s}" for s in ("bias", "running_mean", "running_var", "num_batches_tracked")}
    assert missing == {"layer1.0.downsample.0.weight"} | bn
    assert set(convert.from_library(theirs.state_dict(), cp)) == set(ours.state_dict())


@pytest.mark.parametrize("arch,variant,say", [
    ("resnet50", "A", "neither torchvision nor timm"),
    ("resnet20", "D", "neither torchvision nor timm"),
    ("mobilenet_v1", "A", "neither torchvision nor timm"),
])
def test_no_counterpart_is_an_error_listing_what_works(arch, variant, say):
    with torch.device("meta"):
        model = build_model(arch, 10, variant=variant, width_mult=0.25) if arch == "mobilenet_v1" \
            else build_model(arch, 10, variant=variant)
    with pytest.raises(WeightsError, match=say) as e:
        convert.counterparts(model)
    assert "bagoftricks run folder" in str(e.value) and "safetensors" in str(e.value)
    assert "timm resnet50d = resnet50-D" in str(e.value)


def test_a_library_without_the_structure_or_with_other_options():
    with torch.device("meta"):
        c = build_model("resnet50", 10, variant="C")
        silu = build_model("resnet50", 10, variant="B", activation="silu")
    with pytest.raises(WeightsError, match="torchvision has no model of that structure"):
        convert.counterparts(c, "torchvision")
    assert [x.name for x in convert.counterparts(c, "timm")] == ["resnet50c"]
    with pytest.raises(WeightsError, match="activation differs"):
        convert.counterparts(silu, "timm")
