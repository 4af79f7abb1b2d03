import math

import pytest

from bagoftricks.tricks.schedule import lr_at, lr_curve, scaled_lr, warmup_steps


def test_scaled_lr_is_linear_in_batch():
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert scaled_lr(0.1, 1024) == pytest.approx(0.4)
    assert scaled_lr(0.1, 64) == pytest.approx(0.025)


def test_warmup_ramps_linearly_from_zero():
    kw = dict(base_lr=0.4, steps_per_epoch=10, epochs=12, warmup_epochs=2.0)
    assert warmup_steps(2.0, 10) == 20
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == pytest.approx(0.1)   # i/m = 5/20
    assert lr_at(10, **kw) == pytest.approx(0.2)  # m/2 -> base/2
    assert lr_at(20, **kw) == pytest.approx(0.4)  # m -> base


def test_no_warmup_is_base_lr_at_step_zero():
    assert lr_at(0, base_lr=0.4, steps_per_epoch=10, epochs=12) == 0.4
    assert lr_at(0, base_lr=0.4, steps_per_epoch=10, epochs=12, kind="cosine") == 0.4


def test_step_milestones_are_absolute_epochs_with_warmup():
    # The paper's schedule (§2, authors' reference script): 5 warmup epochs, drops still at 30/60/90.
    kw = dict(base_lr=0.4, steps_per_epoch=10, epochs=120, warmup_epochs=5.0, milestones=(30, 60, 90), gamma=0.1)
    assert lr_at(50, **kw) == pytest.approx(0.4)      # warmup over: base lr
    assert lr_at(299, **kw) == pytest.approx(0.4)     # last step of epoch 29
    assert lr_at(300, **kw) == pytest.approx(0.04)    # first step of epoch 30: base · 0.1
    assert lr_at(599, **kw) == pytest.approx(0.04)
    assert lr_at(600, **kw) == pytest.approx(0.004)   # epoch 60
    assert lr_at(900, **kw) == pytest.approx(0.0004)  # epoch 90
    assert lr_at(300, **kw) == lr_at(300, **{**kw, "warmup_epochs": 0.0})  # warmup moves no drop


def test_milestone_inside_warmup_applies_after_it():
    kw = dict(base_lr=1.0, steps_per_epoch=10, epochs=6, warmup_epochs=2.0, milestones=(1, 4), gamma=0.5)
    assert lr_at(10, **kw) == pytest.approx(10 / 20)          # warmup ramps to base, not to base · gamma
    assert lr_at(20, **kw) == pytest.approx(0.5)              # after warmup, milestone 1 already passed
    assert lr_at(40, **kw) == pytest.approx(0.25)


def test_cosine_endpoints_and_midpoint():
    # m = 5, total = 30, T = total - 1 - m = 24.
    kw = dict(base_lr=1.0, steps_per_epoch=10, epochs=3, warmup_epochs=0.5, kind="cosine", floor=0.1)
    assert lr_at(5, **kw) == pytest.approx(1.0)                # t = 0: base
    assert lr_at(5 + 12, **kw) == pytest.approx(0.55)          # t = T/2: (base + floor) / 2
    assert lr_at(5 + 6, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(29, **kw) == pytest.approx(0.1)               # last step: floor
    assert lr_at(40, **kw) == pytest.approx(0.1)               # past the end: stays at floor
    curve = lr_curve(**kw)
    assert len(curve) == 30 and curve[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(curve[5:], curve[6:]))    # monotone after warmup


def test_linear_midpoint():
    kw = dict(base_lr=1.0, steps_per_epoch=11, epochs=3, kind="linear")  # T = 32
    assert lr_at(16, **kw) == pytest.approx(0.5)
    assert lr_at(32, **kw) == pytest.approx(0.0)


def test_curve_matches_lr_at():
    kw = dict(base_lr=0.2, steps_per_epoch=7, epochs=4, warmup_epochs=1.0, milestones=(1, 2), gamma=0.5)
    assert lr_curve(**kw) == [lr_at(s, **kw) for s in range(28)]


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="step, cosine, linear"):
        lr_at(0, base_lr=0.1, steps_per_epoch=1, epochs=1, kind="exp")
