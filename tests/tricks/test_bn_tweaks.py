import pytest
import torch
import torch.nn as nn

from bagoftricks import recipe
from bagoftricks.engine import setup
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.errors import RecipeError
from bagoftricks.tricks.bn_tweaks import freeze_bn_gamma
from bagoftricks.tricks.no_bias_decay import param_groups
from tests.engine.conftest import tiny


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))


def test_freeze_gamma_leaves_gamma_out_of_the_groups():
    m = _net()
    assert freeze_bn_gamma(m) == 1
    assert not m[1].weight.requires_grad and m[1].bias.requires_grad
    ids = {id(p) for g in param_groups(m, 1e-4, False) for p in g["params"]}
    assert id(m[1].weight) not in ids and id(m[1].bias) in ids


def test_bn_lr_mult_moves_bn_params_to_their_own_group():
    m = _net()
    groups = {g["name"]: g for g in param_groups(m, 1e-4, True, bn_lr_mult=8.0)}
    assert [id(p) for p in groups["bn"]["params"]] == [id(m[1].weight), id(m[1].bias)]
    assert groups["bn"]["lr_mult"] == 8.0 and groups["bn"]["weight_decay"] == 0.0
    assert len(groups["decay"]["params"]) == 2 and len(groups["no_decay"]["params"]) == 2  # conv/fc w, b
    plain = param_groups(m, 1e-4, False, bn_lr_mult=8.0)
    assert [g["name"] for g in plain] == ["decay", "bn"] and plain[1]["weight_decay"] == 1e-4
    assert [g["name"] for g in param_groups(m, 1e-4, True)] == ["decay", "no_decay"]  # 1 = off


def test_the_step_sets_the_bn_group_lr():
    t = setup.setup_training(tiny("tricks.bn_lr_mult=4", "train.epochs=2"), torch.device("cpu"), DistInfo())
    lr = t.step.set_lr(1, 0)
    lrs = {g["name"]: g["lr"] for g in t.optimizer.param_groups}
    assert lrs["decay"] == pytest.approx(lr) and lrs["bn"] == pytest.approx(4 * lr) and lr > 0


def test_frozen_gamma_is_refused_with_zero_gamma():
    with pytest.raises(RecipeError, match="tricks.bn_freeze_gamma"):
        recipe.validate(recipe.from_dict({"tricks": {"bn_freeze_gamma": True, "zero_gamma": True}}))
    with pytest.raises(RecipeError, match="tricks.bn_lr_mult"):
        recipe.validate(recipe.from_dict({"tricks": {"bn_lr_mult": 0}}))


def test_frozen_gamma_does_not_train():
    t = setup.setup_training(tiny("tricks.bn_freeze_gamma=true"), torch.device("cpu"), DistInfo())
    bn = [m for m in t.model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.weight.clone() for m in bn]
    x, y = next(iter(t.data.train.epoch(0)))
    t.step((x, y), 0, 0)
    assert all(torch.equal(a, m.weight) for a, m in zip(before, bn))
    assert not all(torch.equal(a, m.bias) for a, m in zip([torch.zeros_like(m.bias) for m in bn], bn))
