import pytest
import torch

from bagoftricks.tricks.mixup import batch_permutation, mix, sample_lambda


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
    g = _gen(0)
    lam = torch.tensor([sample_lambda(alpha, g) for _ in range(20000)], dtype=torch.float64)
    assert lam.min() >= 0 and lam.max() <= 1
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Var of Beta(α, α) = α² / ((2α)² (2α + 1))
    assert lam.mean().item() == pytest.approx(0.5, abs=0.015)
    assert lam.var().item() == pytest.approx(var, abs=0.006)


def test_small_alpha_is_u_shaped():
    g = _gen(1)
    lam = torch.tensor([sample_lambda(0.2, g) for _ in range(5000)])
    edges = ((lam < 0.1) | (lam > 0.9)).float().mean().item()
    # P(λ < 0.1 or λ > 0.9) for Beta(0.2, 0.2) = 2·I_0.1(0.2, 0.2) ≈ 0.673 (numerical integral;
    # standard error over 5000 draws 0.0066); a uniform λ would give 0.2
    assert 0.645 < edges < 0.70


def test_lambda_is_reproducible_and_alpha_zero_is_off():
    assert sample_lambda(0.2, _gen(5)) == sample_lambda(0.2, _gen(5))
    g = _gen(5)
    state = g.get_state()
    assert sample_lambda(0.0, g) == 1.0
    assert torch.equal(g.get_state(), state)  # "off" draws nothing


def test_permutation_is_a_reproducible_permutation():
    p = batch_permutation(10, _gen(3))
    assert sorted(p.tolist()) == list(range(10))
    assert torch.equal(p, batch_permutation(10, _gen(3)))


def test_mix_uses_the_same_lambda_and_partner_for_inputs_and_labels():
    x = torch.arange(3 * 2, dtype=torch.float32).view(3, 2)          # rows (0,1), (2,3), (4,5)
    y = torch.eye(3)
    perm = torch.tensor([2, 0, 1])
    xm, ym = mix(x, y, 0.3, perm)
    assert torch.allclose(xm, torch.tensor([[2.8, 3.8], [0.6, 1.6], [2.6, 3.6]]))  # .3 x_i + .7 x_perm[i]
    assert torch.allclose(ym, torch.tensor([[0.3, 0.0, 0.7], [0.7, 0.3, 0.0], [0.0, 0.7, 0.3]]))
    assert torch.allclose(ym.sum(1), torch.ones(3))
    assert torch.equal(x, torch.arange(6, dtype=torch.float32).view(3, 2))  # input untouched


def test_lambda_one_is_identity():
    x, y = torch.randn(4, 3, 2, 2, generator=_gen()), torch.eye(4)
    xm, ym = mix(x, y, 1.0, torch.tensor([3, 2, 1, 0]))
    assert torch.equal(xm, x) and torch.equal(ym, y)
