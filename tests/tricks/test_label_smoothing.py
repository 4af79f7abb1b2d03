import math

import pytest
import torch
import torch.nn.functional as F

from bagoftricks.tricks.label_smoothing import optimal_logit_gap, smoothed_targets
from bagoftricks.tricks.loss import soft_cross_entropy

LABELS = torch.tensor([0, 3, 1])


def test_paper_form_matches_formula():
    q = smoothed_targets(LABELS, 4, 0.2, form="paper")
    expected = torch.full((3, 4), 0.2 / 3)
    expected[0, 0] = expected[1, 3] = expected[2, 1] = 0.8
    assert torch.allclose(q, expected)
    assert torch.allclose(q.sum(1), torch.ones(3))


def test_uniform_form_matches_formula():
    q = smoothed_targets(LABELS, 4, 0.2, form="uniform")
    expected = torch.full((3, 4), 0.05)
    expected[0, 0] = expected[1, 3] = expected[2, 1] = 0.85
    assert torch.allclose(q, expected)
    assert torch.allclose(q.sum(1), torch.ones(3))


def test_uniform_with_rescaled_eps_equals_paper_form():
    eps, K = 0.1, 10
    assert torch.allclose(smoothed_targets(LABELS, K, eps, "paper"),
                          smoothed_targets(LABELS, K, eps * K / (K - 1), "uniform"))


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_eps_zero_is_exactly_one_hot(form):
    assert torch.equal(smoothed_targets(LABELS, 4, 0.0, form), F.one_hot(LABELS, 4).float())


def test_bad_form_is_rejected():
    with pytest.raises(ValueError, match="paper, uniform"):
        smoothed_targets(LABELS, 4, 0.1, form="timm")


def test_paper_gap_number():
    assert optimal_logit_gap(1000, 0.1) == pytest.approx(math.log(999 * 9), rel=1e-12)
    assert optimal_logit_gap(1000, 0.1) == pytest.approx(9.10, abs=0.01)
    assert optimal_logit_gap(1000, 0.1, form="uniform") == pytest.approx(math.log(9001), rel=1e-12)
    assert optimal_logit_gap(10, 0.0) == math.inf


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_gap_minimises_cross_entropy(form):
    K, eps = 5, 0.2
    q = smoothed_targets(torch.tensor([0]), K, eps, form).double()
    g = torch.tensor(optimal_logit_gap(K, eps, form), dtype=torch.float64, requires_grad=True)
    z = torch.cat([g.view(1), torch.zeros(K - 1, dtype=torch.float64)]).view(1, K)
    loss = soft_cross_entropy(z, q)
    loss.backward()
    assert abs(g.grad.item()) < 1e-6  # stationary point (targets are fp32); the slope at ±0.1 is ~1e-2
    for d in (-0.1, 0.1):
        zd = torch.cat([(g.detach() + d).view(1), torch.zeros(K - 1, dtype=torch.float64)]).view(1, K)
        assert soft_cross_entropy(zd, q) > loss
