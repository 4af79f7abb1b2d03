import pytest
import torch
import torch.nn as nn

from bagoftricks.tricks.ema import ModelEMA


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def _set(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_update_formula_and_buffers_copied():
    m = _model()
    _set(m, 1.0)
    ema = ModelEMA(m)
    _set(m, 3.0)
    m[1].running_mean.fill_(7.0)
    assert ema.update(m, 0.9) == 0.9
    for t in ema.params.values():
        assert torch.allclose(t, torch.full_like(t, 0.9 * 1.0 + 0.1 * 3.0))   # 1.2
    _set(m, 5.0)
    ema.update(m, 0.9)
    for t in ema.params.values():
        assert torch.allclose(t, torch.full_like(t, 0.9 * 1.2 + 0.1 * 5.0))   # 1.58
    assert torch.equal(ema.buffers["1.running_mean"], torch.full((3,), 7.0))
    assert ema.buffers["1.num_batches_tracked"].dtype == torch.long


def test_decay_one_keeps_and_zero_copies():
    m = _model()
    ema = ModelEMA(m)
    before = {n: t.clone() for n, t in ema.params.items()}
    _set(m, 4.0)
    ema.update(m, 1.0)
    assert all(torch.equal(before[n], t) for n, t in ema.params.items())
    ema.update(m, 0.0)
    assert all(torch.equal(t, torch.full_like(t, 4.0)) for t in ema.params.values())


def test_warmup_decay_rule():
    m = _model()
    ema = ModelEMA(m, warmup=True)
    assert ema.update(m, 0.999) == pytest.approx(1 / 10)    # n = 0: (1+0)/(10+0)
    assert ema.update(m, 0.999) == pytest.approx(2 / 11)    # n = 1
    ema.num_updates = 100_000
    assert ema.update(m, 0.999) == 0.999                    # capped at the requested decay


def test_copy_to_and_state_dict_round_trip():
    m = _model()
    _set(m, 2.0)
    ema = ModelEMA(m)
    _set(m, 4.0)
    ema.update(m, 0.5)                                       # ema = 3
    other = _model()
    ema.copy_to(other)
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in other.parameters())
    fresh = ModelEMA(_model())
    fresh.load_state_dict(ema.state_dict())
    assert fresh.num_updates == 1
    assert all(torch.equal(fresh.params[n], t) for n, t in ema.params.items())


def test_fp32_shadow_of_half_model_keeps_small_increments():
    m = _model().half()
    _set(m, 1.0)
    ema = ModelEMA(m)
    assert all(t.dtype == torch.float32 for t in ema.params.values())
    _set(m, 1.0 + 2**-10)                                  # representable in fp16
    ema.update(m, 0.999)                                   # increment 1e-3·2^-10 is below fp16 resolution at 1
    for t in ema.params.values():
        v = t.flatten()[0].item()
        assert v == pytest.approx(1.0 + 0.001 * 2**-10, abs=2e-7) and v > 1.0  # an fp16 shadow would stay at 1


def test_wrapped_model_is_unwrapped():
    m = _model()
    wrapped = nn.DataParallel(m)  # same `.module` unwrapping path as DistributedDataParallel
    ema = ModelEMA(wrapped)
    assert set(ema.params) == {n for n, _ in m.named_parameters()}
    _set(m, 6.0)
    ema.update(wrapped, 0.0)
    assert all(torch.equal(t, torch.full_like(t, 6.0)) for t in ema.params.values())
