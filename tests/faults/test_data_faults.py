"""A DataLoader worker that hangs or dies fails the run within data.timeout seconds with a message
(exit 1), instead of hanging.

The data is an image folder of tiny PNGs read with data.in_memory=never (per-image DataLoader path,
1 worker). A folder this small is decoded once into a TensorDataset (data/registry.py), so the workers
read images through TensorDataset.__getitem__: the fault (sleep forever, or os._exit) is injected
there, in the worker processes only (forked, they inherit the patched class)."""
import os
import time

import pytest
from torch.utils.data import get_worker_info

from bagoftricks.cli import main
from bagoftricks.data.common import TensorDataset
from tests.distributed.launch import sets
from tests.imagefolders import write_png_folder

TINY = ("data.name=imagefolder", "data.image_size=16", "data.augment=small", "data.pad=2",
        "model.arch=resnet20", "model.width=4", "train.epochs=1", "train.batch_size=8",
        "train.device=cpu", "train.threads=1", "data.in_memory=never", "data.workers=1", "data.timeout=2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_png_folder(tmp_path_factory.mktemp("pngs"), 8, 16, offset=40)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["hang", "die"])
def test_stuck_or_dead_loader_worker_fails_the_run(tmp_path, folder, capsys, monkeypatch, fault):
    real = TensorDataset.__getitem__

    def faulty(self, i):
        if get_worker_info() is not None:  # inside a DataLoader worker only
            if fault == "hang":
                time.sleep(3600)
            os._exit(3)
        return real(self, i)

    monkeypatch.setattr(TensorDataset, "__getitem__", faulty)
    t0 = time.monotonic()
    code = main(["train", *sets(TINY), "--set", f"data.root={folder}", "--out", str(tmp_path / "run"), "--no-progress"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1, err
    if fault == "hang":
        assert "DataTimeoutError" in err and "within 2 s" in err
    else:
        assert "exited unexpectedly" in err
    assert elapsed < 30
