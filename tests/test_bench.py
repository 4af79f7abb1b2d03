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
    assert len(res["train_windows_s"]) == 3
    assert res["ratio"] == res["train_img_s"] / res["reference_img_s"]
    assert 0 < res["mfu"] < 1
    assert res["mfu"] * res["matmul_peak_flops"] == __import__("pytest").approx(6 * res["macs_per_image"] * res["train_img_s"])
    assert any(line.startswith("ratio") and line.rstrip().endswith("x") for line in out)


def test_bench_bad_recipe_exit_2(capsys):
    assert main(["bench", "--set", "train.batch_size=0"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
