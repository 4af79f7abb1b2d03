"""Test-time augmentation: the views, and the mean of their logits."""
import pytest
import torch

from bagoftricks import tricks


def test_views():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    assert [v is x for v in tricks.tta_views(x, "none")] == [True]
    plain, mirror = tricks.tta_views(x, "flip")
    assert plain is x and torch.equal(mirror[..., 0], x[..., -1])
    views = tricks.tta_views(x, "flip_shift")
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    down_right = views[2]  # x moved by (+2, +2), zero-filled
    assert torch.equal(down_right[..., 2:, 2:], x[..., :-2, :-2]) and down_right[..., :2, :].abs().sum() == 0
    up_left = views[4]
    assert torch.equal(up_left[..., :-2, :-2], x[..., 2:, 2:])
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot'"):
        tricks.tta_views(x, "rot")


def test_flip_logits_are_the_mean_over_the_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        plain = model(x)
        both = tricks.tta_logits(model, x, "flip")
        assert torch.allclose(both, (plain + model(x.flip(-1))) / 2)
        assert not torch.allclose(both, plain)  # an asymmetric model: the mirror adds information
        assert torch.equal(tricks.tta_logits(model, x, "none"), plain)
