"""benchmarks/zero_gamma.py on a tiny run: the last-BN γ and branch weight norms it records start where
zero γ puts them and move with training, one record per checkpoint, and the figure is drawn."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = {"model": {"arch": "resnet20", "width": 4},
        "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "small",
                 "num_classes": 4},
        "optim": {"lr": 0.2},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"}}


def _script():
    spec = importlib.util.spec_from_file_location("zero_gamma_bench", REPO / "benchmarks" / "zero_gamma.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import yaml
    tmp = tmp_path_factory.mktemp("zg")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp / "out"
    assert _script().main(["--recipe", str(tmp / "tiny.yaml"), "--every", "2", "--out", str(out)]) == 0
    return out, json.loads((out / "zero_gamma.json").read_text())


def test_records_start_where_zero_gamma_puts_them_and_move(result):
    out, res = result
    on, off = res["zero_gamma_on"], res["zero_gamma_off"]
    assert [x["step"] for x in on] == [0, 2, 4, 6, 8] == [x["step"] for x in off]   # 4 steps/epoch, 2 epochs
    assert len(on[0]["gamma_abs_mean"]) == 9                                          # ResNet-20: 9 blocks
    assert all(g == 0.0 for g in on[0]["gamma_abs_mean"]) and all(g == 1.0 for g in off[0]["gamma_abs_mean"])
    assert on[-1]["gamma_mean"] > 0.0                    # the silent branches' γ grows with training
    assert on[0]["branch_weight_norm"] == off[0]["branch_weight_norm"]   # same seed: same conv weights
    assert on[-1]["branch_norm_mean"] != on[0]["branch_norm_mean"]
    assert all(n > 0 for x in on + off for n in x["branch_weight_norm"])


def test_figure_is_written_and_a_rerun_reuses_the_runs(result):
    out, res = result
    png = (out / "zero_gamma.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    mtime = (out / "zero_gamma_on" / "final.json").stat().st_mtime_ns
    assert _script().main(["--recipe", str(out.parent / "tiny.yaml"), "--every", "2", "--out", str(out)]) == 0
    assert (out / "zero_gamma_on" / "final.json").stat().st_mtime_ns == mtime
    assert json.loads((out / "zero_gamma.json").read_text()) == res
