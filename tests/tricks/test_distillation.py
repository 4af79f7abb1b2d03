import math

import pytest
import torch

from bagoftricks.tricks.distillation import distillation_loss

Z = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]   # student
R = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]   # teacher
P = [[1.0, 0.0, 0.0], [0.1, 0.1, 0.8]]    # targets (one-hot and smoothed)


def _softmax(v, T=1.0):
    e = [math.exp(a / T) for a in v]
    s = sum(e)
    return [a / s for a in e]


def _ce(p, q):  # CE(p, q) = -Σ p log q
    return -sum(a * math.log(b) for a, b in zip(p, q))


@pytest.mark.parametrize("T,w", [(1.0, 1.0), (4.0, 1.0), (20.0, 0.5)])
def test_value_matches_hand_computation(T, w):
    expected = sum(w * _ce(p, _softmax(z)) + T * T * _ce(_softmax(r, T), _softmax(z, T))
                   for z, r, p in zip(Z, R, P)) / len(Z)
    out = distillation_loss(torch.tensor(Z), torch.tensor(R), torch.tensor(P), T, hard_weight=w)
    assert out.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 5.0, 20.0])
def test_soft_gradient_is_T_times_prob_difference(T):
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(R, dtype=torch.float64, requires_grad=True)
    distillation_loss(z, r, torch.tensor(P), T, hard_weight=0.0).backward()
    expected = T * (torch.softmax(z.detach().float() / T, 1) - torch.softmax(r.detach().float() / T, 1)) / len(Z)
    assert torch.allclose(z.grad.float(), expected, atol=1e-6)
    assert r.grad is None  # the teacher is detached inside


def test_identical_teacher_gives_only_hard_loss_and_zero_soft_gradient():
    z = torch.tensor(Z, requires_grad=True)
    out = distillation_loss(z, torch.tensor(Z), torch.tensor(P), 20.0, hard_weight=0.0)
    out.backward()
    # soft term = T² · entropy(softmax(z/T)), minimised at r = z: gradient 0
    assert torch.allclose(z.grad, torch.zeros_like(z), atol=1e-6)
