"""Every build_model option changes the model, initialisation is the paper's, bad names are refused."""

import math

import pytest
import torch
from torch import nn

from bagoftricks.models import ACTIVATIONS, DropPath, SqueezeExcite, build_model, count_params_macs, make_activation
from bagoftricks.models.resnet import ResidualBlock


def seeded(arch, *args, **kwargs):
    torch.manual_seed(0)
    return build_model(arch, *args, **kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def outputs(model, x, train=False):
    model.train(train)
    torch.manual_seed(7)  # same drop-path masks for both models
    with torch.no_grad():
        return model(x)


X32 = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def differs(a, b, x=X32):
    """Two models differ in parameter count, module structure or eval-mode output."""
    if n_params(a) != n_params(b) or str(a) != str(b):
        return True
    return not torch.equal(outputs(a, x), outputs(b, x))


def test_same_seed_same_model():
    a, b = seeded("resnet20", 10, variant="D"), seeded("resnet20", 10, variant="D")
    assert not differs(a, b)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("variant", "BCD")
def test_variant_changes_the_model(variant):
    # A bottleneck net (small width keeps it cheap): even A → B, same parameters, differs in output.
    base = seeded("resnet50", 10, width=8, variant="A")
    assert differs(base, seeded("resnet50", 10, width=8, variant=variant))
    if variant != "B":  # basic blocks: only the stem (C) and the shortcut (D) can change
        assert differs(seeded("resnet20", 10), seeded("resnet20", 10, variant=variant))


def test_variant_is_case_insensitive():
    assert not differs(seeded("resnet20", 10, variant="d"), seeded("resnet20", 10, variant="D"))


def test_width_changes_the_model():
    narrow, default, wide = (n_params(seeded("resnet20", 10, width=w)) for w in (8, 0, 32))
    assert narrow < default < wide
    m = seeded("resnet18", 10, width=16)
    assert m.conv1.out_channels == 16 and m.fc.in_features == 128


def test_init_changes_the_weights():
    a, b = seeded("resnet20", 10, init="xavier"), seeded("resnet20", 10, init="kaiming")
    assert not torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.fc.weight, b.fc.weight)
    assert differs(a, b)


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"relu"}))
def test_activation_changes_the_model(activation):
    base = seeded("resnet20", 10)
    other = seeded("resnet20", 10, activation=activation)
    assert n_params(base) == n_params(other)
    assert differs(base, other)
    kinds = {type(m) for m in other.modules()} & {nn.ReLU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish, nn.Mish}
    assert kinds == {type(make_activation(activation))}  # used everywhere, ReLU nowhere


def test_swish_is_silu():
    assert not differs(seeded("resnet20", 10, activation="swish"), seeded("resnet20", 10, activation="silu"))


@pytest.mark.parametrize("arch, size", [("mobilenet_v1", 32), ("inception_v3", 75)])
def test_activation_and_init_apply_to_other_families(arch, size):
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = seeded(arch, 5)
    assert differs(base, seeded(arch, 5, activation="hardswish"), x)
    assert differs(base, seeded(arch, 5, init="kaiming"), x)


def test_se_reduction_adds_one_module_per_block():
    base, se = seeded("resnet20", 10), seeded("resnet20", 10, se_reduction=4)
    blocks = [m for m in se.modules() if isinstance(m, ResidualBlock)]
    assert all(isinstance(b.se, SqueezeExcite) for b in blocks)
    assert sum(isinstance(m, SqueezeExcite) for m in se.modules()) == len(blocks) == 9
    # hidden width max(C // r, 8): 16 // 4 → 8 (floor), 64 // 4 → 16
    assert se.layer1[0].se.fc1.out_channels == 8 and se.layer3[0].se.fc1.out_channels == 16
    assert n_params(se) > n_params(base)
    assert n_params(seeded("resnet20", 10, se_reduction=2)) > n_params(se)
    assert differs(base, se)
    # Bottleneck: SE on the expanded width (256 → 256 // 16 = 16 hidden).
    m = meta("seresnet50")
    assert m.layer1[0].se.fc1.in_channels == 256 and m.layer1[0].se.fc1.out_channels == 16


def test_groups_and_width_per_group():
    base = seeded("resnet50", 10, width=16)
    grouped = seeded("resnet50", 10, width=16, groups=4)
    # groups alone keeps a ResNet's inner width (width_per_group 0 → 64 // groups) and groups the 3×3.
    assert grouped.layer1[0].conv2.groups == 4 and grouped.layer1[0].conv2.out_channels == 16
    assert grouped.layer1[0].conv1.groups == 1 and grouped.layer1[0].conv3.groups == 1
    assert n_params(grouped) < n_params(base)
    wide = seeded("resnet50", 10, width=16, groups=4, width_per_group=32)
    # ResNeXt rule: int(planes · wpg / 64) · groups = int(16 · 32 / 64) · 4 = 32
    assert wide.layer1[0].conv2.out_channels == 32 and n_params(wide) > n_params(grouped)
    # Basic blocks: both 3×3 convs are grouped.
    small = seeded("resnet20", 10, groups=2)
    assert all(b.conv1.groups == b.conv2.groups == 2 for b in small.modules() if isinstance(b, ResidualBlock))
    assert n_params(small) < n_params(seeded("resnet20", 10))
    assert n_params(seeded("resnet20", 10, width_per_group=128)) > n_params(seeded("resnet20", 10))


def meta(arch, *args, **kwargs):
    with torch.device("meta"):
        return build_model(arch, *args, **kwargs)


def test_resnext_presets():
    m = meta("resnext50_32x4d", variant="B")
    assert m.layer1[0].conv2.groups == 32 and m.layer1[0].conv2.out_channels == 128  # 32 × 4d
    assert meta("resnext101_32x8d").layer4[0].conv2.out_channels == 32 * 8 * 8
    # An explicit value overrides the preset.
    assert meta("resnext50_32x4d", groups=8).layer1[0].conv2.groups == 8
    assert meta("seresnext50_32x4d").layer2[0].se.fc1.in_channels == 512


def test_drop_path_is_stochastic_in_training_only():
    base, dp = seeded("resnet20", 10), seeded("resnet20", 10, drop_path=0.5)
    assert n_params(base) == n_params(dp)
    assert torch.equal(outputs(base, X32), outputs(dp, X32))  # eval: identical
    assert not torch.equal(outputs(base, X32, train=True), outputs(dp, X32, train=True))
    # Linear schedule over the L = 9 blocks: block i drops with 0.5 · i / 8.
    blocks = [m for m in dp.modules() if isinstance(m, ResidualBlock)]
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]
    assert rates == pytest.approx([0.5 * i / 8 for i in range(9)])


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    dp = DropPath(0.25).train()
    torch.manual_seed(0)
    y = dp(torch.ones(4000, 2, 3, 3))
    per_sample = y.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # one decision per sample
    kept = per_sample[:, 0].unique()
    assert len(kept) == 2 and kept[0] == 0 and kept[1].item() == pytest.approx(4 / 3)
    assert abs(y.mean().item() - 1.0) < 0.05
    assert torch.equal(dp.eval()(y), y)


def test_width_mult_changes_mobilenet():
    widths = {}
    for alpha in (0.25, 0.5, 0.75, 1.0):
        m = seeded("mobilenet_v1", 10, width_mult=alpha)
        widths[alpha] = (m.num_features, n_params(m))
    assert [widths[a][0] for a in (0.25, 0.5, 0.75, 1.0)] == [256, 512, 768, 1024]
    assert widths[0.25][1] < widths[0.5][1] < widths[0.75][1] < widths[1.0][1]


# ------------------------------------------------------------------------------ initialisation


def fans(w):
    receptive = w[0, 0].numel() if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v1", "resnet20"])
def test_xavier_uniform_bound(arch):
    """§2: weights ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), torch's fan convention."""
    model = seeded(arch, 10)
    checked = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = fans(m.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            top = m.weight.abs().max().item()
            assert top <= bound
            if m.weight.numel() >= 1000:  # P(max < 0.99 a) = 0.99^n: negligible
                assert top >= 0.99 * bound
                assert m.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
                checked += 1
            if m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0
    assert checked >= 5
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_kaiming_normal_fan_out():
    model = seeded("resnet18", 10, init="kaiming")
    conv = model.layer3[0].conv2  # 256 × 256 × 3 × 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.02)
    assert torch.count_nonzero(model.fc.bias) == 0


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, argument, bad, valid",
    [
        (dict(arch="resnet51"), "arch", "resnet51", "resnet50"),
        (dict(arch="resnet50", variant="E"), "variant", "E", "'D'"),
        (dict(arch="resnet20", activation="tanh"), "activation", "tanh", "leaky_relu"),
        (dict(arch="mobilenet_v1", init="orthogonal"), "init", "orthogonal", "xavier"),
    ],
)
def test_bad_names_raise_with_the_choices(kwargs, argument, bad, valid):
    with pytest.raises(ValueError) as err:
        build_model(**kwargs)
    msg = str(err.value)
    assert argument in msg and repr(bad) in msg and valid in msg


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("mobilenet_v1", dict(se_reduction=4)),
        ("mobilenet_v1", dict(variant="D")),
        ("inception_v3", dict(width_mult=0.5)),
        ("resnet50", dict(width_mult=0.5)),
        ("inception_v3", dict(drop_path=0.1)),
    ],
)
def test_options_an_arch_lacks_are_refused(arch, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build_model(arch, **kwargs)


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("resnet20", dict(groups=3)),  # does not divide 16
        ("resnet20", dict(drop_path=1.0)),
        ("resnet20", dict(se_reduction=-1)),
        ("mobilenet_v1", dict(width_mult=0.0)),
        ("resnet50", dict(groups=128, width_per_group=0)),
    ],
)
def test_bad_values_raise(arch, kwargs):
    with pytest.raises(ValueError):
        build_model(arch, **kwargs)


def test_count_params_macs_is_side_effect_free_and_falls_back():
    model = seeded("resnet20", 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_params_macs(model, (3, 32, 32)) == count_params_macs(model, (8, 3, 32, 32))  # per image
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    class DataDependent(nn.Module):  # .item() cannot run on meta tensors → real forward
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            scale = float(x.abs().sum().item() + 1.0)
            return self.fc(x.flatten(1)) * scale

    assert count_params_macs(DataDependent(), (3, 2, 2)) == (65, 60)
