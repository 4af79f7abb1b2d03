import pytest
import torch
import torch.nn as nn

from bagoftricks.tricks.zero_gamma import zero_last_bn_gamma


class TinyBlock(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))), identity shortcut; exposes `last_bn`."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    @property
    def last_bn(self):
        return self.bn2

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(TinyBlock(), TinyBlock())


def test_zero_gamma_makes_untrained_blocks_identity_on_nonnegative_input():
    x = torch.rand(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    net = _net()
    assert not torch.allclose(net(x), x)  # the check below can fail
    assert zero_last_bn_gamma(net) == 2
    for mode in (True, False):  # batch statistics and running statistics
        net.train(mode)
        assert torch.equal(net(x), x)
    # only the last BN of each block is touched
    for block in net:
        assert torch.all(block.bn2.weight == 0) and torch.all(block.bn1.weight == 1)


def test_non_residual_model_is_untouched():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    assert zero_last_bn_gamma(net) == 0
    assert torch.all(net[1].weight == 1)


def test_affine_free_last_bn_is_refused():
    net = _net()
    net[0].bn2 = nn.BatchNorm2d(4, affine=False)
    with pytest.raises(ValueError, match="affine"):
        zero_last_bn_gamma(net)
