import pytest
import torch
import torch.nn as nn

from bagoftricks.tricks.lookahead import Lookahead, is_sync_step, lookahead_decay


def _fill(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_decay_ramps_from_zero_to_the_final_value():
    assert lookahead_decay(0, 100, 0.8, 3.0) == 0.0
    assert lookahead_decay(50, 100, 0.8, 3.0) == pytest.approx(0.8 * 0.125)
    assert lookahead_decay(100, 100, 0.8, 3.0) == pytest.approx(0.8)
    assert lookahead_decay(10, 100, 0.8, 0.0) == pytest.approx(0.8)  # ramp 0: constant
    with pytest.raises(ValueError, match="total_steps"):
        lookahead_decay(1, 0, 0.8, 3.0)


def test_sync_steps_every_k():
    assert [s for s in range(12) if is_sync_step(s, 5)] == [4, 9]
    assert not any(is_sync_step(s, 0) for s in range(10))


def test_sync_averages_and_resets_the_fast_weights():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    _fill(m, 1.0)
    la = Lookahead(m)
    _fill(m, 3.0)
    la.sync(m, 0.75)                            # slow = 0.75·1 + 0.25·3 = 1.5, fast <- slow
    for p in m.parameters():
        assert torch.allclose(p, torch.full_like(p, 1.5))
    _fill(m, 5.5)
    la.sync(m, 0.0)                             # d = 0: the fast weights are kept as they are
    for p in m.parameters():
        assert torch.allclose(p, torch.full_like(p, 5.5))


def test_state_round_trip():
    m = nn.Linear(3, 1)
    la = Lookahead(m)
    _fill(m, 2.0)
    la.sync(m, 0.5)
    other = Lookahead(nn.Linear(3, 1))
    other.load_state_dict(la.state_dict())
    for n, t in la.slow.params.items():
        assert torch.equal(other.slow.params[n], t)
