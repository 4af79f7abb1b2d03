"""The structure each §4 variant promises, in both input families, and the zero-γ identity (§3)."""

import pytest
import torch
import torchvision
from torch import nn

from bagoftricks.models import VARIANTS, build_model, residual_last_bns
from bagoftricks.models.resnet import BasicBlock, Bottleneck, ResidualBlock
from bagoftricks.tricks import zero_last_bn_gamma


def meta(arch, *args, **kwargs):
    with torch.device("meta"):
        return build_model(arch, *args, **kwargs)


def downsampling_blocks(model):
    return [getattr(model, f"layer{s}")[0] for s in range(2, model.num_stages + 1)]


def convs(seq):
    return [m for m in seq if isinstance(m, nn.Conv2d)]


def test_variant_table_is_the_paper():
    assert VARIANTS["A"] == dict(stride_on="conv1x1", stem="single", shortcut="conv")
    assert VARIANTS["B"]["stride_on"] == "conv3x3" and VARIANTS["B"]["stem"] == "single"
    # C = B + deep stem (Table 5: C costs as much as D); D = C + avg-pool shortcut.
    assert VARIANTS["C"] == dict(VARIANTS["B"], stem="deep")
    assert VARIANTS["D"] == dict(VARIANTS["C"], shortcut="avgpool+conv")


@pytest.mark.parametrize("variant", "ABCD")
def test_bottleneck_stride_position(variant):
    model = meta("resnet50", variant=variant)
    for block in downsampling_blocks(model):
        assert isinstance(block, Bottleneck)
        strides = (block.conv1.stride, block.conv2.stride, block.conv3.stride)
        if variant == "A":
            assert strides == ((2, 2), (1, 1), (1, 1))
        else:
            assert strides == ((1, 1), (2, 2), (1, 1))
        assert block.conv1.kernel_size == (1, 1) and block.conv2.kernel_size == (3, 3)
    # Non-downsampling blocks never stride.
    rest = [b for s in range(1, 5) for b in getattr(model, f"layer{s}")[1:]] + [model.layer1[0]]
    assert all(m.stride == (1, 1) for b in rest for m in b.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("variant", "ABCD")
def test_imagenet_stem(variant):
    model = meta("resnet50", variant=variant)
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.stride == 2
    if variant in "AB":
        conv = model.conv1
        assert isinstance(conv, nn.Conv2d)
        assert (conv.kernel_size, conv.stride, conv.out_channels) == ((7, 7), (2, 2), 64)
    else:
        stem = list(model.conv1)
        kinds = [type(m) for m in stem]
        act = type(model.act)
        assert kinds == [nn.Conv2d, nn.BatchNorm2d, act, nn.Conv2d, nn.BatchNorm2d, act, nn.Conv2d]
        cs = convs(stem)
        assert [c.kernel_size for c in cs] == [(3, 3)] * 3
        assert [c.stride[0] for c in cs] == [2, 1, 1]
        assert [c.out_channels for c in cs] == [32, 32, 64]
        assert model.bn1.num_features == 64  # the third conv's BN + act are the model's bn1/act


@pytest.mark.parametrize("variant", "ABCD")
def test_downsampling_shortcut(variant):
    model = meta("resnet50", variant=variant)
    # layer1[0] only widens 64 → 256: a plain stride-1 1×1 conv in every variant.
    widen = list(model.layer1[0].downsample)
    assert [type(m) for m in widen] == [nn.Conv2d, nn.BatchNorm2d] and widen[0].stride == (1, 1)
    for block in downsampling_blocks(model):
        path = list(block.downsample)
        if variant == "D":
            pool, conv, bn = path
            assert isinstance(pool, nn.AvgPool2d)
            assert (pool.kernel_size, pool.stride) == (2, 2)
            assert pool.ceil_mode and not pool.count_include_pad
            assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and isinstance(bn, nn.BatchNorm2d)
        else:
            conv, bn = path
            assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)


@pytest.mark.parametrize("variant", "ABCD")
def test_every_variant_keeps_the_resolution_schedule(variant):
    """Whatever the tweak, a 224 px image reaches the classifier as 7×7×2048."""
    model = meta("resnet50", variant=variant)
    out = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert tuple(out.shape) == (1, 2048, 7, 7)


def test_basic_blocks_have_no_stride_choice():
    """ResNet-18 and the small family: the first 3×3 carries the stride, so A and B are one network."""
    for arch, size in [("resnet18", 64), ("resnet20", 32)]:
        torch.manual_seed(0)
        a = build_model(arch, 10, variant="A").eval()
        torch.manual_seed(0)
        b = build_model(arch, 10, variant="B").eval()
        assert str(a) == str(b)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.equal(a(x), b(x))
        for block in downsampling_blocks(a):
            assert isinstance(block, BasicBlock) and block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


@pytest.mark.parametrize("variant", "ABCD")
def test_small_family_structure(variant):
    model = meta("resnet20", 10, variant=variant)
    assert isinstance(model.maxpool, nn.Identity)
    assert [getattr(model, f"layer{s}")[0].bn2.num_features for s in (1, 2, 3)] == [16, 32, 64]
    assert [len(getattr(model, f"layer{s}")) for s in (1, 2, 3)] == [3, 3, 3]
    if variant in "AB":
        assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.out_channels) == ((3, 3), (1, 1), 16)
    else:
        cs = convs(model.conv1)
        deep_stem = [((3, 3), 1, 8), ((3, 3), 1, 8), ((3, 3), 1, 16)]
        assert [(c.kernel_size, c.stride[0], c.out_channels) for c in cs] == deep_stem
    assert model.layer1[0].downsample is None
    for block in downsampling_blocks(model):
        kinds = [type(m) for m in block.downsample]
        assert kinds == ([nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d] if variant == "D" else [nn.Conv2d, nn.BatchNorm2d])
    out = model.forward_features(torch.empty(1, 3, 32, 32, device="meta"))
    assert tuple(out.shape) == (1, 64, 8, 8)


def test_width_override_scales_every_stage():
    model = meta("resnet50", variant="D", width=32)
    assert [c.out_channels for c in convs(model.conv1)] == [16, 16, 32]
    assert [getattr(model, f"layer{s}")[-1].bn3.num_features for s in (1, 2, 3, 4)] == [128, 256, 512, 1024]
    small = meta("resnet20", width=8, variant="C")
    assert [c.out_channels for c in convs(small.conv1)] == [4, 4, 8] and small.fc.in_features == 32


# ----------------------------------------------------------------------------------------- zero γ


def test_residual_last_bns_finds_the_last_bn_of_every_block():
    counts = {"resnet18": 8, "resnet50": 16, "resnet101": 33, "resnet152": 50, "resnet20": 9, "resnet110": 54}
    for arch, blocks in counts.items():
        model = meta(arch)
        found = residual_last_bns(model)
        assert len(found) == blocks
        residual = [b for b in model.modules() if isinstance(b, ResidualBlock)]
        expected = [b.bn3 if isinstance(b, Bottleneck) else b.bn2 for b in residual]
        assert all(f is e for f, e in zip(found, expected, strict=True))
    assert residual_last_bns(meta("mobilenet_v1")) == [] and residual_last_bns(meta("inception_v3")) == []
    with torch.device("meta"):
        assert len(residual_last_bns(torchvision.models.resnet50())) == 16


@pytest.mark.parametrize(
    "arch, kwargs, size",
    [
        ("resnet20", dict(variant="A"), 16),
        ("resnet20", dict(variant="D", se_reduction=4, drop_path=0.2), 16),
        ("resnet50", dict(variant="D", width=8, groups=2, width_per_group=64), 32),
        ("resnet18", dict(variant="C", width=8), 32),
    ],
)
def test_zero_gamma_makes_every_block_the_identity(arch, kwargs, size):
    torch.manual_seed(0)
    model = build_model(arch, 10, **kwargs)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert zero_last_bn_gamma(model) == len(blocks)
    assert all(torch.count_nonzero(b.last_bn.weight) == 0 for b in blocks)
    model.eval()
    # Feed each block a non-negative input of its own shape (as a ReLU network would).
    shapes = {}

    def record(module, args):
        shapes[module] = args[0].shape  # returns None: the input is left alone

    hooks = [b.register_forward_pre_hook(record) for b in blocks]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    g = torch.Generator().manual_seed(1)
    identity = 0
    with torch.no_grad():
        for b in blocks:
            x = torch.rand(shapes[b], generator=g) * 3
            y = b(x)
            if b.downsample is None:
                assert torch.equal(y, x)
                identity += 1
            else:
                assert torch.equal(y, torch.relu(b.downsample(x)))
    assert identity > 0


def test_narrow_strided_pointwise_conv_is_the_same_function_and_trains_in_channels_last():
    """Below 8 input channels a strided 1×1 conv is computed as subsample + 1×1 (a oneDNN heap
    corruption in channels-last weight gradients); values, gradients and keys equal nn.Conv2d's."""
    from bagoftricks.models.resnet import SubsampledPointwise, _conv1x1

    torch.manual_seed(0)
    narrow = _conv1x1(4, 8, 2)
    assert isinstance(narrow, SubsampledPointwise) and type(_conv1x1(8, 16, 2)) is torch.nn.Conv2d
    plain = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False)
    plain.load_state_dict(narrow.state_dict(), strict=True)
    x = torch.randn(3, 4, 9, 9)
    (a := narrow(x)).sum().backward()
    (b := plain(x)).sum().backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(narrow.weight.grad, plain.weight.grad)
    model = build_model("resnet20", 4, 3, width=4).to(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            xb = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
            model(xb).sum().backward()
    finally:
        torch.set_num_threads(before)
    assert model.layer2[0].downsample[0].weight.grad is not None
