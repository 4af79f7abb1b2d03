"""Test-time augmentation: the views, their borders, and the weighted mean of their logits."""
import pytest
import torch

from bagoftricks import tricks


def test_views():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    assert [v is x for v in tricks.tta_views(x, "none")] == [True]
    plain, mirror = tricks.tta_views(x, "flip")
    assert plain is x and torch.equal(mirror[..., 0], x[..., -1])
    views = tricks.tta_views(x, "flip_shift", border=-7.0)
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    down_right = views[2]  # x moved by (+1, +1), the uncovered edge -7
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert (down_right[..., 0, :] == -7).all() and (down_right[..., :, 0] == -7).all()
    assert torch.equal(views[3][..., 1:, 1:], mirror[..., :-1, :-1])  # the mirror moved the same way
    up_left = views[4]
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:]) and (up_left[..., -1, :] == -7).all()
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot'"):
        tricks.tta_views(x, "rot")


def test_border_is_what_training_padded_with():
    """zeros padding of uint8 images is black, which after normalisation is -mean/std per channel; reflect mirrors."""
    mean, std = (120.0, 60.0), (60.0, 30.0)
    assert tricks.tta_border("zeros", mean, std) == (-2.0, -2.0)
    assert tricks.tta_border("reflect", mean, std) == "reflect"
    x = torch.randn(1, 2, 4, 4)
    moved = tricks.tta_views(x, "flip_shift", border=(-2.0, 5.0))[2]
    assert (moved[:, 0, 0] == -2).all() and (moved[:, 1, :, 0] == 5).all()
    reflected = tricks.tta_views(x, "flip_shift", border="reflect")[2]
    assert torch.equal(reflected[..., 0, 1:], x[..., 1, :-1])  # row -1 of the image is its row 1
    assert torch.equal(reflected[..., 1:, 1:], x[..., :-1, :-1])


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


def test_flip_shift_weighs_the_shifted_views_half():
    """airbench94's weights: the image and its mirror 1/4 each, each of the four shifted views 1/8."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        views = [model(v) for v in tricks.tta_views(x, "flip_shift", border=-1.0)]
        got = tricks.tta_logits(model, x, "flip_shift", border=-1.0)
        assert torch.allclose(got, (views[0] + views[1]) / 4 + sum(views[2:]) / 8)
        assert not torch.allclose(got, torch.stack(views).mean(0))
        assert not torch.allclose(got, tricks.tta_logits(model, x, "flip_shift", border=0.0))  # the border is read
    with pytest.raises(ValueError, match="flip_shift: 6 views' logits expected, got 2"):
        tricks.tta_mean(views[:2], "flip_shift")
