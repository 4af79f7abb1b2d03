import torch
import torch.nn as nn

from bagoftricks.tricks.no_bias_decay import param_groups


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 4)
        self.fc_again = self.fc          # shared module: its params must appear once
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied.weight = self.fc.weight  # a parameter shared by two modules: also once
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3, bias=False)
        self.scale = nn.Parameter(torch.tensor(1.0))  # a 0-D parameter outside any layer
        self.embed = nn.Parameter(torch.zeros(2, 4))  # 2-D but not a conv/linear weight: no decay
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _ids(ps):
    return [id(p) for p in ps]


def test_no_decay_group_is_exactly_biases_and_norm_params():
    m = Mixed()
    groups = param_groups(m, weight_decay=1e-4, no_bias_decay=True)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    decay, no_decay = groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert set(_ids(decay["params"])) == set(_ids([m.conv.weight, m.fc.weight, m.head.weight]))
    expected = [m.conv.bias, m.bn.weight, m.bn.bias, m.gn.weight, m.gn.bias, m.fc.bias,
                m.ln.weight, m.ln.bias, m.scale, m.embed]
    assert set(_ids(no_decay["params"])) == set(_ids(expected))
    everything = _ids(decay["params"]) + _ids(no_decay["params"])
    trainable = [p for p in m.parameters() if p.requires_grad]  # parameters() deduplicates
    assert len(everything) == len(set(everything)) == len(trainable) == 13


def test_off_is_one_group_with_all_trainable_params():
    m = Mixed()
    groups = param_groups(m, weight_decay=5e-4, no_bias_decay=False)
    assert len(groups) == 1 and groups[0]["name"] == "decay" and groups[0]["weight_decay"] == 5e-4
    assert _ids(groups[0]["params"]) == _ids([p for p in m.parameters() if p.requires_grad])


def test_optimizer_decays_only_the_decay_group():
    # One SGD step with zero gradients, lr 1, wd 0.1: decayed params shrink by exactly 0.9, the rest stay.
    m = Mixed()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(2.0)
    opt = torch.optim.SGD(param_groups(m, weight_decay=0.1, no_bias_decay=True), lr=1.0)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(m.conv.weight, torch.full_like(m.conv.weight, 1.8))
    assert torch.equal(m.fc.weight, torch.full_like(m.fc.weight, 1.8))
    for p in (m.conv.bias, m.bn.weight, m.ln.bias, m.scale):
        assert torch.equal(p, torch.full_like(p, 2.0))
