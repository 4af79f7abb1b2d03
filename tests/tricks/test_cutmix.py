import pytest
import torch

from bagoftricks.tricks.cutmix import choose_mix, cutmix_batch, cutmix_box

H = W = 10


def _expected_box(g, lam):
    """Hand version: 6×6 box for λ = 0.64, centre (cy, cx) drawn in that order, clipped."""
    side = round(H * (1 - lam) ** 0.5)
    cy = int(torch.randint(0, H, (1,), generator=g))
    cx = int(torch.randint(0, W, (1,), generator=g))
    y0, x0 = cy - side // 2, cx - side // 2
    return max(0, y0), min(H, y0 + side), max(0, x0), min(W, x0 + side)

def _clipped_seed(lam):
    for seed in range(100):
        y0, y1, x0, x1 = cutmix_box(lam, H, W, torch.Generator().manual_seed(seed))
        if (y1 - y0) * (x1 - x0) < 36:
            return seed
    raise AssertionError("no clipped box in 100 seeds")

def test_box_matches_hand_computation():
    for seed in range(20):
        assert cutmix_box(0.64, H, W, torch.Generator().manual_seed(seed)) == \
            _expected_box(torch.Generator().manual_seed(seed), 0.64)

def test_label_weight_is_pasted_area_after_clipping():
    lam = 0.64                        # unclipped box 6×6 = 36 % of the image
    seed = _clipped_seed(lam)         # a centre near the border, so the box is clipped
    y0, y1, x0, x1 = _expected_box(torch.Generator().manual_seed(seed), lam)
    area = (y1 - y0) * (x1 - x0)
    assert area < 36
    x = torch.stack([torch.full((1, H, W), float(i)) for i in range(3)])  # image i is constant i
    y = torch.eye(3)
    perm = torch.tensor([1, 2, 0])
    xm, ym, lam_eff = cutmix_batch(x, y, lam, perm, torch.Generator().manual_seed(seed))
    assert lam_eff == pytest.approx(1 - area / 100) and lam_eff > lam
    for i in range(3):
        pasted = xm[i, 0] == float(perm[i])
        assert pasted.sum().item() == area                      # exactly the box comes from the partner
        assert pasted[y0:y1, x0:x1].all()
        assert ym[i, i].item() == pytest.approx(lam_eff)
        assert ym[i, perm[i]].item() == pytest.approx(1 - lam_eff)
        # label weight equals the fraction of pixels that are still the image's own
        assert (xm[i, 0] == float(i)).float().mean().item() == pytest.approx(lam_eff)

def test_lambda_one_pastes_nothing():
    x = torch.randn(2, 3, H, W)
    xm, ym, lam_eff = cutmix_batch(x, torch.eye(2), 1.0, torch.tensor([1, 0]), torch.Generator().manual_seed(0))
    assert lam_eff == 1.0 and torch.equal(xm, x) and torch.equal(ym, torch.eye(2))

def test_choose_mix_off_single_and_both():
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert choose_mix(0.0, 0.0, generator=g) is None
    assert choose_mix(0.2, 0.0, generator=g) == "mixup"
    assert choose_mix(0.0, 1.0, generator=g) == "cutmix"
    assert torch.equal(g.get_state(), state)  # no draw unless both are on
    picks = [choose_mix(0.2, 1.0, 0.3, g) for _ in range(4000)]
    assert picks.count("cutmix") / 4000 == pytest.approx(0.3, abs=0.03)
    assert set(picks) == {"mixup", "cutmix"}
