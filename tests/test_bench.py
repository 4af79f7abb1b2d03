"""`bagoftricks bench` on CPU with a tiny model: every number is there, positive and consistent."""
import json

from bagoftricks.cli import main

TINY = ["--set", "data.name=synthetic", "--set", "data.image_size=16", "--set", "data.synthetic_samples=64",
        "--set", "model.arch=resnet20", "--set", "model.width=4", "--set", "train.batch_size=16",
        "--set", "data.augment=small", "--set", "train.device=cpu"]


def test_bench_prints_table_and_json(capsys):
    assert main(["bench", *TINY, "--warmup", "1", "--windows", "3", "--steps", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    for key in ("train_img_s", "eval_img_s", "loader_img_s", "reference_img_s", "matmul_peak_flops", "macs_per_image"):
        assert res[key] > 0, key
    assert len(res["train_windows_s"]) == 3 and len(res["reference_windows_s"]) == 3
    assert res["ratio"] == res["train_img_s"] / res["reference_img_s"]
    assert 0 < res["mfu"] < 1
    # MFU per window: the step's FLOP/s over the matmul peak of the window taken next to it, then the median
    assert len(res["matmul_peak_windows_flops"]) == 3 and min(res["matmul_peak_windows_flops"]) > 0
    pairs = [6 * res["macs_per_image"] * res["batch_size"] / w / p
             for w, p in zip(res["train_windows_s"], res["matmul_peak_windows_flops"])]
    assert res["mfu_windows"] == __import__("pytest").approx(pairs)
    assert res["mfu"] == __import__("pytest").approx(sorted(pairs)[1])
    assert res["matmul_peak_flops"] == sorted(res["matmul_peak_windows_flops"])[1]
    assert any(line.startswith("ratio") and line.rstrip().endswith("x") for line in out)
    # a CPU run swaps in the small convolutions' products (train.small_convs: matmul, the default) and says so
    assert res["small_convs"] == "matmul"
    assert any(line.startswith("model") and "small convs as matrix products" in line for line in out)


def test_bench_warns_of_an_emulated_precision_as_a_run_would(capsys):
    """fp16 autocast on a CPU (the paper's recipes ask for it) is emulated, measured 13x slower than fp32 for
    ResNet-50-D: bench names it beside its numbers, as train does in run.log."""
    assert main(["bench", *TINY, "--set", "train.precision=fp16", "--warmup", "1", "--windows", "1", "--steps", "1",
                 "--no-reference", "--no-loader"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["precision"] == "fp16" and len(res["warnings"]) == 1 and "emulated" in res["warnings"][0]
    assert any(line.startswith("warning") and "fp16 autocast is emulated" in line for line in out)
    assert main(["bench", *TINY, "--set", "train.precision=fp32", "--warmup", "1", "--windows", "1", "--steps", "1",
                 "--no-reference", "--no-loader"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "warnings" not in json.loads(out[-1]) and not any(line.startswith("warning") for line in out)


def test_bench_bad_recipe_exit_2(capsys):
    assert main(["bench", "--set", "train.batch_size=0"]) == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_bench_profile_splits_the_step_by_phase_and_operator(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert main(["bench", *TINY, "--warmup", "1", "--windows", "1", "--steps", "1", "--no-reference", "--no-loader",
                 "--profile", "2", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    prof = json.loads(out.strip().splitlines()[-1])["profile"]
    assert prof["steps"] == 2
    ph = prof["phases_ms"]
    assert set(ph) == {"data+augment", "forward+loss", "backward+step", "optimizer"}
    assert all(v > 0 for v in ph.values())
    assert ph["optimizer"] < ph["backward+step"]  # the optimizer's step is timed inside backward+step
    cats = prof["categories_ms"]
    assert cats["convolution"] > 0 and cats["batch norm"] > 0 and cats["optimizer"] > 0
    assert list(cats.values()) == sorted(cats.values(), reverse=True)
    assert "phase backward+step" in out and "ops   convolution" in out
    assert json.loads(trace.read_text())["traceEvents"]


def test_bench_trace_without_profile_exit_2(capsys):
    assert main(["bench", *TINY, "--trace", "t.json"]) == 2
    assert "--trace" in capsys.readouterr().err


def test_bench_kernels_names_the_onednn_implementations_and_their_share(capsys):
    assert main(["bench", *TINY, "--warmup", "1", "--windows", "1", "--steps", "1", "--no-reference", "--no-loader",
                 "--kernels", "1"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    k = res["kernels"]
    assert k["isa"] and k["cpu_capability"] and k["step_ms"] > 0
    convs = [row for row in k["kernels"] if row["kind"] == "convolution"]
    assert convs and all(":" in row["implementation"] or row["implementation"] for row in convs)
    assert 0 < sum(row["share_of_step"] for row in k["kernels"]) <= 1.5  # verbose timing adds a little
    assert "oneDNN kernels: ISA" in out


def test_onednn_lines_are_summed_by_kind_and_implementation():
    from bagoftricks.onednn import parse
    lines = ["onednn_verbose,v1,info,cpu,isa:Intel AMX with bfloat16",
             "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
             "src:bf16,attr,alg:convolution_direct,mb128_ic8oc8_ih28oh28kh3,1.5",
             "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
             "src:bf16,attr,alg:convolution_direct,mb128_ic8oc8_ih28oh28kh3,0.5",
             "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src dst,attr,,8x8x3x3,0.25",
             "something else printed"]
    isa, rows = parse(lines)
    assert isa == "Intel AMX with bfloat16"
    conv = rows[("convolution", "brg_conv_fwd:avx10_1_512_amx")]
    assert (conv.calls, conv.ms) == (2, 2.0) and conv.shapes == {"mb128_ic8oc8_ih28oh28kh3": 2.0}
    assert rows[("reorder", "jit:uni")].ms == 0.25


def test_a_step_without_onednn_kernels_is_said_so():
    from bagoftricks.onednn import format_kernels
    text = format_kernels({"isa": "", "step_ms": 100.0, "kernels": []})
    assert "none ran" in text and "100.0 %" in text


def test_bench_counts_macs_at_the_size_the_step_ran(capsys):
    """Progressive resizing trains epoch 0 (what bench times) at its first size: the MACs, and so the MFU, are
    that size's, not data.image_size's (which would count (16/8)² = 4x the work done)."""
    from bagoftricks import models as bmodels
    from bagoftricks import recipe as brecipe
    from bagoftricks.engine import derive
    shrunk = [*TINY, "--set", "data.progressive_sizes=[8]", "--set", "train.epochs=2", "--set", "data.num_classes=4"]
    assert main(["bench", *shrunk, "--warmup", "1", "--windows", "1", "--steps", "1", "--no-reference",
                 "--no-loader"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["image_size"] == [8, 8]
    r = brecipe.load(None, [a for a in shrunk if a != "--set"])
    model = derive.recipe_model(r, 4, 3)  # synthetic data: RGB
    assert res["macs_per_image"] == bmodels.count_params_macs(model, (3, 8, 8))[1]
    assert res["macs_per_image"] < bmodels.count_params_macs(model, (3, 16, 16))[1]
    assert any(line.startswith("model") and "at 8x8 px" in line for line in out)
