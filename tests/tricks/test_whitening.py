import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks.engine import load_model, setup, train
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.errors import UsageError
from bagoftricks.tricks.whitening import fit_whitening, patch_covariance, whitening_filters
from tests.engine.conftest import tiny


def _correlated(n=64, c=2, size=12):
    torch.manual_seed(0)
    x = torch.randn(n, c, size, size)
    x[:, :, :, 1:] += 2 * x[:, :, :, :-1]      # neighbouring pixels correlate
    if c > 1:
        x[:, 1] += x[:, 0]                     # and the channels
    return x


def test_covariance_matches_the_patches():
    x = _correlated(8, 1, 5)
    cov = patch_covariance(x, 2)
    p = torch.stack([x[:, 0, i:i + 2, j:j + 2].reshape(8, 4) for i in range(4) for j in range(4)], 1).reshape(-1, 4)
    torch.testing.assert_close(cov, torch.cov(p.double().T))


def test_filters_whiten_the_patches_and_come_with_their_negatives():
    x = _correlated()
    w = whitening_filters(x, 2, eps=0.0)
    assert w.shape == (16, 2, 2, 2)
    torch.testing.assert_close(w[8:], -w[:8])
    y = F.conv2d(x.double(), w[:8].double()).permute(1, 0, 2, 3).reshape(8, -1)
    torch.testing.assert_close(torch.cov(y), torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0)


def test_directions_grey_images_never_take_repeat_varying_filters_not_a_45x_gain():
    # grey images stored as RGB, normalised per channel (ImageNet's statistics, as an image folder is): a 2x2 RGB
    # patch varies in 4 of its 12 directions; the other 8 filters repeat those 4 instead of 1/sqrt(eps) (45x) on a
    # direction with no signal, so that bf16 rounding (or padding in a colour that is not grey) is not amplified
    # into features evaluation never sees, and no stem channel is a constant
    grey = _correlated(64, 1, 12)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (grey.expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    w = whitening_filters(x, 2)
    assert torch.equal(w[4:12], w[:4].repeat(2, 1, 1, 1)) and torch.equal(w[12:], -w[:12])
    y = F.conv2d(x.double(), w[:4].double()).permute(1, 0, 2, 3).reshape(4, -1)
    torch.testing.assert_close(torch.cov(y), torch.eye(4, dtype=torch.float64), atol=2e-3, rtol=0)  # eps=5e-4
    rounding = F.conv2d(x.bfloat16().float(), w) - F.conv2d(x, w)  # what a bf16 step's input rounding becomes
    assert rounding.abs().max() < 0.05  # 6.6 (std 0.81 in a channel) with a 45x gain on the null directions


def test_fit_sets_the_weight_and_checks_its_shape():
    x = _correlated()
    conv = nn.Conv2d(2, 16, 2, bias=True)
    fit_whitening(conv, x)
    torch.testing.assert_close(conv.weight.data, whitening_filters(x, 2))
    assert not conv.bias.any()
    with pytest.raises(ValueError, match="shape"):
        fit_whitening(nn.Conv2d(2, 8, 2), x)


def test_the_run_fits_the_stem_and_checkpoints_it(tmp_path):
    r = tiny("model.arch=airbench", "model.stem=whiten", "train.epochs=1")
    t = setup.setup_training(r, torch.device("cpu"), DistInfo())
    images = t.data.eval_transform(t.data.train.ds.images[:setup.WHITEN_IMAGES])
    torch.testing.assert_close(t.model.stem.weight.data, whitening_filters(images, 2))
    assert all(p is not t.model.stem.weight for g in t.optimizer.param_groups for p in g["params"])
    train(r, tmp_path / "run", progress=False)
    saved = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["model"]["stem.weight"]
    assert torch.equal(saved, t.model.stem.weight)                   # frozen: never trained
    assert torch.equal(load_model(tmp_path / "run").model.stem.weight, saved)


def test_whitening_needs_in_memory_data(monkeypatch):
    r = tiny("model.arch=airbench", "model.stem=whiten")
    data = setup.build_data(r, torch.device("cpu"), DistInfo())
    monkeypatch.setattr(data.train, "ds", object())
    with pytest.raises(UsageError, match="model.stem"):
        setup.fit_stem(nn.Module(), data)
