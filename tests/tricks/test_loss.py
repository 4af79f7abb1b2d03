import math

import torch
import torch.nn.functional as F

from bagoftricks.tricks.loss import soft_cross_entropy


def test_equals_cross_entropy_on_one_hot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g) * 3
    labels = torch.randint(0, 7, (6,), generator=g)
    ours = soft_cross_entropy(logits, F.one_hot(labels, 7).float())
    assert torch.allclose(ours, F.cross_entropy(logits, labels), atol=1e-6)


def test_soft_target_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    q = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert abs(soft_cross_entropy(logits, q).item() - expected) < 1e-6


def test_half_precision_logits_are_computed_in_fp32():
    logits = torch.tensor([[20.0, 0.0, -20.0]]).half()
    q = torch.tensor([[0.0, 0.0, 1.0]])
    out = soft_cross_entropy(logits, q)
    assert out.dtype == torch.float32
    assert abs(out.item() - 40.0) < 1e-3  # -log softmax_3 = 40 + log(1 + e^-20 + e^-40)
