"""Parameter and MAC counts against the paper (Table 5), the original architecture papers and
torchvision's reference definitions."""

import pytest
import torch
import torchvision

from bagoftricks.models import build_model, count_params_macs


def meta(arch, *args, **kwargs):
    with torch.device("meta"):
        return build_model(arch, *args, **kwargs)


def close(value, target, rel):
    return abs(value - target) <= rel * target


# He et al. 2019 Table 5 at 224 px, 1000 classes, as measured with torch's flop counter on the
# reference definitions (paper.md §4): (params, MACs).
TABLE5 = {
    "A": (25.557e6, 3.86e9),
    "B": (25.557e6, 4.09e9),
    "C": (25.576e6, 4.33e9),
    "D": (25.576e6, 4.33e9),
}


@pytest.mark.parametrize("variant", sorted(TABLE5))
def test_table5_resnet50_params_and_macs(variant):
    params, macs = count_params_macs(meta("resnet50", variant=variant), (3, 224, 224))
    want_params, want_macs = TABLE5[variant]
    assert close(params, want_params, 0.01), params
    assert close(macs, want_macs, 0.01), macs


def test_table5_ordering():
    """The tweaks' costs: B > A (stride moved later), C > B (deep stem), D = C (pooling is free)."""
    cost = {v: count_params_macs(meta("resnet50", variant=v), (3, 224, 224)) for v in "ABCD"}
    assert cost["A"][0] == cost["B"][0] < cost["C"][0] == cost["D"][0]
    assert cost["C"][0] - cost["B"][0] == 19_232  # three 3×3 convs + 2 BN(32) − one 7×7 conv
    assert cost["A"][1] < cost["B"][1] < cost["C"][1] == cost["D"][1]


def test_resnet50_b_matches_torchvision_counts():
    with torch.device("meta"):
        tv = torchvision.models.resnet50()
    ours = meta("resnet50", variant="B")
    assert count_params_macs(ours, (3, 224, 224)) == count_params_macs(tv, (3, 224, 224))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters()) == 25_557_032


@pytest.mark.parametrize(
    "arch, tv_name",
    [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("resnext50_32x4d", "resnext50_32x4d")],
)
def test_variant_b_is_torchvision_architecture(arch, tv_name):
    """torchvision's ResNets are ResNet-B: their weights load strictly into ours and compute the
    same function; A loads too (same shapes) but computes a different one when bottlenecks exist."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, tv_name)(num_classes=10).eval()
    for p in (m.weight for m in tv.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(p, 0.5, 1.5)  # non-trivial BN so that every layer matters
    x = torch.randn(2, 3, 64, 64)
    ours = build_model(arch, 10, variant="B").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-4, atol=1e-5)
    if arch != "resnet18":
        a = build_model(arch, 10, variant="A").eval()
        a.load_state_dict(tv.state_dict(), strict=True)
        with torch.no_grad():
            assert not torch.allclose(a(x), tv(x), rtol=1e-3, atol=1e-4)


def test_imagenet_family_counts_scale_with_depth():
    """Published ResNet parameter counts (He et al. 2016; torchvision), variant B, 1000 classes."""
    published = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet101": 44_549_160, "resnet152": 60_192_808}
    for arch, n in published.items():
        assert count_params_macs(meta(arch, variant="B"), (3, 224, 224))[0] == n


@pytest.mark.parametrize(
    "arch, paper_params",
    # He et al. 2016 Table 6 (CIFAR-10): 0.27 M, 0.46 M, 0.66 M, 0.85 M, 1.7 M. Ours use 1×1
    # projection shortcuts instead of zero padding, which adds ~1.5 % to the two-digit figures.
    [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)],
)
def test_small_family_params(arch, paper_params):
    params, macs = count_params_macs(meta(arch, 10), (3, 32, 32))
    assert close(params, paper_params, 0.02), params
    # Exact MACs of variant A, counted by hand: stem 3×3 (3→16) at 32², 6n−2 full 3×3 convs that each
    # cost 16·16·9·32² (width doubles as the area quarters), two stride-2 3×3 convs at half that,
    # two 1×1 projection shortcuts and the 64→10 classifier.
    n = (int(arch[len("resnet"):]) - 2) // 6
    full = 16 * 16 * 9 * 32 * 32
    expected = 3 * 16 * 9 * 32 * 32 + (6 * n - 2) * full + 2 * full // 2 + 2 * 16 * 32 * 16 * 16 + 64 * 10
    assert macs == expected


def test_mobilenet_v1_numbers():
    """Howard et al. 2017 Tables 1 and 6: 569 M mult-adds and 4.2 M parameters at α = 1, 224 px."""
    params, macs = count_params_macs(meta("mobilenet_v1"), (3, 224, 224))
    assert close(params, 4.2e6, 0.02), params
    assert close(macs, 569e6, 0.02), macs
    # Table 6, width multiplier α at 224 px: 325 M, 149 M, 41 M mult-adds.
    for alpha, want in [(0.75, 325e6), (0.5, 149e6), (0.25, 41e6)]:
        assert close(count_params_macs(meta("mobilenet_v1", width_mult=alpha), (3, 224, 224))[1], want, 0.02)


def test_inception_v3_matches_torchvision_without_aux():
    with torch.device("meta"):
        tv = torchvision.models.inception_v3(aux_logits=False, init_weights=False)
    ours = meta("inception_v3")
    ours_params, ours_macs = count_params_macs(ours, (3, 299, 299))
    tv_params, tv_macs = count_params_macs(tv, (3, 299, 299))
    assert close(ours_params, tv_params, 0.01) and close(ours_macs, tv_macs, 0.01)
    assert close(ours_params, 23.8e6, 0.01) and close(ours_macs, 5.71e9, 0.01)
    # Same layers, not just the same totals: the multiset of parameter shapes is identical.
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())  # noqa: E731
    assert shapes(ours) == shapes(tv)
