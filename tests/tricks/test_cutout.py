import pytest
import torch

from bagoftricks.tricks.cutout import cutout_batch, random_erasing

B, C, H, W = 32, 2, 16, 16


def _ones():
    return torch.ones(B, C, H, W)


def test_cutout_zeroes_exactly_the_clipped_square():
    size = 4
    out = cutout_batch(_ones(), size, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    cy, cx = torch.randint(0, H, (B,), generator=g), torch.randint(0, W, (B,), generator=g)
    inside = 0
    for i in range(B):
        y0, x0 = int(cy[i]) - 2, int(cx[i]) - 2
        expected = torch.ones(H, W)
        expected[max(0, y0):y0 + 4, max(0, x0):x0 + 4] = 0
        for c in range(C):
            assert torch.equal(out[i, c], expected)
        if y0 >= 0 and y0 + 4 <= H and x0 >= 0 and x0 + 4 <= W:
            inside += 1
            assert (out[i] == 0).sum().item() == C * size * size
    assert 0 < inside < B  # both fully-inside and clipped boxes were exercised


def test_cutout_positions_differ_per_sample_and_input_untouched():
    x = _ones()
    out = cutout_batch(x, 4, torch.Generator().manual_seed(1))
    assert torch.equal(x, _ones())
    masks = (out[:, 0] == 0)
    assert not all(torch.equal(masks[0], m) for m in masks[1:])


def test_cutout_size_zero_is_identity():
    x = torch.randn(2, 3, 5, 5)
    assert cutout_batch(x, 0, torch.Generator().manual_seed(0)) is x


def test_random_erasing_prob_zero_is_identity():
    x = torch.randn(2, 3, 5, 5)
    assert random_erasing(x, 0.0, torch.Generator().manual_seed(0)) is x


def test_random_erasing_erases_one_rectangle_in_range():
    x = torch.full((200, 1, 32, 32), 5.0)
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    for i in range(200):
        zero = out[i, 0] == 0
        assert zero.any()
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert zero.sum() == h * w                       # a solid rectangle
        assert h < 32 and w < 32
        # area in [2 %, 1/3] and h/w in [0.3, 3.3] up to the rounding of h and w
        assert 0.02 * 1024 * 0.8 <= h * w <= 1024 / 3 * 1.15
        assert 0.3 / 1.6 <= h / w <= 3.3 * 1.6


def test_random_erasing_probability():
    x = torch.ones(1000, 1, 16, 16)
    out = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    frac = (out == 0).flatten(1).any(1).float().mean().item()
    assert frac == pytest.approx(0.5, abs=0.05)
