"""benchmarks/compile_cpu.py and benchmarks/conv_shapes.py on tiny inputs: each mode gets its own step built from
the recipe (the compiled mode through torch.compile), windows in turn, ratios to the first mode; the convolution
shares are FLOPs over time over the matmul peak of the same window."""
from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = {"model": {"arch": "resnet20", "width": 4},
        "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "small", "num_classes": 4},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compile_cpu_times_each_mode_in_turn(tmp_path, monkeypatch, capsys):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, *a, **k: compiled.append(m) or m)  # no inductor in the suite
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "c.json"
    assert _script("compile_cpu").main(["--recipe", str(tmp_path / "tiny.yaml"), "--modes", "none", "model",
                                        "--warmup", "1", "--windows", "3", "--steps", "1", "--out", str(out)]) == 0
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)   # only the "model" mode compiles
    res = json.loads(out.read_text())
    assert res["modes"] == ["none", "model"] and all(x > 0 for x in res["img_s"])
    assert res["window_ratios"][0] == [1.0, 1.0, 1.0] and len(res["window_ratios"][1]) == 3
    assert "compile=model" in capsys.readouterr().out


def test_conv_shapes_share_is_flops_over_time_over_the_peak(tmp_path, monkeypatch):
    mod = _script("conv_shapes")
    monkeypatch.setattr(mod, "SHAPES", ((4, 6),))
    out = tmp_path / "s.json"
    assert mod.main(["--batch", "2", "--windows", "3", "--steps", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["macs"] == 2 * 4 * 4 * 9 * 6 * 6
    for name in ("conv forward", "conv forward+backward", "BN+ReLU forward+backward"):
        assert row[f"{name} ms"] > 0
    # each share is the median over windows of FLOPs / time / the matmul FLOP/s of the same window
    for name, flops in (("conv forward", 2 * row["macs"]), ("conv forward+backward", 6 * row["macs"])):
        pairs = [flops / w / p for w, p in zip(row[f"{name} windows s"], row["peak windows flops"])]
        assert len(pairs) == 3 and row[f"{name} share"] == statistics.median(pairs)
    assert row["peak_tflops"] == statistics.median(row["peak windows flops"]) / 1e12


def test_conv_shapes_feeds_back_dense_gradients_of_the_layers_dtype():
    """The backward workloads get what a network's next layer hands back: a dense bf16 channels-last gradient, not
    the zero-stride fp32 tensor of `y.float().sum().backward()` (which doubled the 16-channel conv's backward)."""
    mod = _script("conv_shapes")
    y = torch.zeros(2, 4, 6, 6, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    g = mod.upstream_grad(y)
    assert g.dtype == torch.bfloat16 and g.shape == y.shape and g.stride() == y.stride()
    assert min(g.stride()) > 0 and g.abs().sum() > 0
    assert torch.equal(g, mod.upstream_grad(y))            # seeded: every window sees the same gradient
    seen = []
    real_backward = torch.Tensor.backward

    def spy(t, gradient=None, *a, **k):
        seen.append((t.dtype, gradient.dtype, gradient.stride(), t.is_contiguous(memory_format=torch.channels_last)))
        return real_backward(t, gradient, *a, **k)

    fns = mod.workloads(4, 6, 2)
    try:
        torch.Tensor.backward = spy
        fns["conv forward+backward"]()
        fns["BN+ReLU forward+backward"]()
    finally:
        torch.Tensor.backward = real_backward
    assert [(d, gd) for d, gd, _, _ in seen] == [(torch.bfloat16, torch.bfloat16)] * 2
    assert all(min(st) > 0 and cl for _, _, st, cl in seen)


def test_small_convs_times_both_paths_of_each_shape(tmp_path, monkeypatch, capsys):
    """benchmarks/small_convs.py: every direction timed for oneDNN and, where the products take it, for them; the
    products it times compute what oneDNN does (1×1 output: the window; otherwise im2col)."""
    mod = _script("small_convs")
    monkeypatch.setattr(mod, "SHAPES", ((4, 6, 2, 1), (4, 6, 2, 2)))
    out = tmp_path / "s.json"
    assert mod.main(["--batch", "2", "--dtype", "fp32", "--windows", "3", "--steps", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    two, one = res["rows"]
    assert (two["out_pixels"], one["out_pixels"]) == (4, 1) and res["dtype"] == "fp32"
    for d in ("forward", "input grad", "weight grad"):
        assert two[f"onednn {d} ms"] > 0 and one[f"onednn {d} ms"] > 0 and one[f"product {d} ms"] > 0
    assert "product input grad ms" not in two  # below 1x1 the input gradient stays oneDNN's
    assert "(out 2x2)" in capsys.readouterr().out
    fns = mod.workloads(4, 6, 3, 1, 2, torch.float64)  # 3x3 output: forward and weight gradient as products
    y, gw = fns["onednn forward"](), fns["onednn weight grad"]()[1]
    torch.testing.assert_close(fns["product forward"]().reshape(2, 3, 3, 6).permute(0, 3, 1, 2), y)
    torch.testing.assert_close(fns["product weight grad"]().reshape(6, 3, 3, 4).permute(0, 3, 1, 2), gw)


def test_in_turn_builds_each_variant_from_its_overrides(tmp_path, monkeypatch):
    mod = _script("in_turn")
    built = []
    real = mod.bench.training_step
    monkeypatch.setattr(mod.bench, "training_step", lambda r, *a: built.append(r) or real(r, *a))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "v.json"
    assert mod.main(["--recipe", str(tmp_path / "tiny.yaml"), "--set", "optim.lr=0.05",
                     "--variant", "train.small_convs=native", "--variant", "train.small_convs=matmul,model.width=8",
                     "--warmup", "1", "--windows", "3", "--steps", "1", "--out", str(out)]) == 0
    assert [(r.train.small_convs, r.model.width, r.optim.lr) for r in built] == [("native", 4, 0.05),
                                                                                 ("matmul", 8, 0.05)]
    res = json.loads(out.read_text())
    assert res["window_ratios"][0] == [1.0, 1.0, 1.0] and len(res["window_ratios"][1]) == 3
    assert all(x > 0 for x in res["img_s"]) and len(res["warmup_s"]) == 2
    # a comma inside a value (a list) stays in it; one before the next KEY= starts a new override
    assert mod.split_variant("data.progressive_sizes=[20, 24],train.small_convs=native, optim.lr=0.1") == [
        "data.progressive_sizes=[20, 24]", "train.small_convs=native", "optim.lr=0.1"]


def test_in_turn_counts_each_variant_at_its_own_batch(tmp_path, monkeypatch):
    """A variant that changes train.batch_size: its img/s and its window ratios are per image (counted at the
    recipe's batch, batch 32 in the time of batch 16 read as half the speed)."""
    mod = _script("in_turn")
    monkeypatch.setattr(mod.bench, "_interleaved", lambda fns, *a: [mod.bench.Timing(0.1, [0.1, 0.1, 0.1]),
                                                                     mod.bench.Timing(0.1, [0.1, 0.2, 0.1])])
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    res = mod.time_in_turn(mod.brecipe.load(str(tmp_path / "tiny.yaml")), [["train.batch_size=16"],
                                                                             ["train.batch_size=32"]], 1, 3, 1)
    assert res["img_s"] == [160.0, 320.0]
    assert res["window_ratios"] == [[1.0, 1.0, 1.0], [2.0, 1.0, 2.0]]


def test_tta_views_scores_what_the_library_reports(tmp_path):
    """benchmarks/tta_views.py: its flip and its 1 px black-edge airbench-weighted shift are exactly what the run's
    evaluation reports for tricks.tta flip and flip_shift (the run pads with zeros); every combination is scored."""
    from bagoftricks.engine import evaluate_checkpoint
    from tests.deploy.conftest import run_of

    run = run_of(tmp_path / "run", "data.synthetic_samples=96")
    mod = _script("tta_views")
    out = tmp_path / "views.json"
    assert mod.main([str(run), "--out", str(out)]) == 0
    got = json.loads(out.read_text())[str(run)]
    assert len(got) == 2 + 2 * 3 * 2 and all(0 <= v <= 100 for v in got.values())
    plain = evaluate_checkpoint(run, device="cpu", tta="flip")
    assert got["plain"] == pytest.approx(plain["top1"]) and got["flip"] == pytest.approx(plain["tta_top1"])
    shifted = evaluate_checkpoint(run, device="cpu", tta="flip_shift")
    assert got["shift1_black_airbench"] == pytest.approx(shifted["tta_top1"])
