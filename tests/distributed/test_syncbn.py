"""The portable SyncBatchNorm outside a process group is BatchNorm, and converts without changing
names or values (checkpoints move between sync_bn on and off). Its 2-rank behaviour is checked end to
end in test_ddp.py."""
import torch
import torch.nn as nn

from bagoftricks.engine import syncbn


def test_without_process_group_it_is_batchnorm():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    conv = syncbn.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                                       nn.BatchNorm2d(4)))
    conv.load_state_dict(ref.state_dict())
    assert [type(m).__name__ for m in conv] == ["Conv2d", "SyncBatchNorm", "ReLU", "SyncBatchNorm"]
    assert list(conv.state_dict()) == list(ref.state_dict())
    x = torch.randn(6, 3, 8, 8)
    for mode in (True, False):
        ref.train(mode)
        conv.train(mode)
        assert torch.equal(ref(x), conv(x))
    for k, v in ref.state_dict().items():
        assert torch.equal(conv.state_dict()[k], v), k


def test_convert_shares_parameters_and_picks_torch_on_cuda():
    bn = nn.BatchNorm2d(3)
    m = syncbn.convert_sync_batchnorm(nn.Sequential(bn))
    assert m[0].weight is bn.weight and m[0].running_mean is bn.running_mean
    cuda = syncbn.convert(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cuda", 0))
    assert isinstance(cuda[0], nn.SyncBatchNorm)
