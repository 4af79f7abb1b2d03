"""export: every format loads where it promises and gives the model's logits; failures leave no file."""
import json

import pytest
import torch
from safetensors import safe_open

from bagoftricks.cli import main
from bagoftricks.deploy import export as bexport
from bagoftricks.engine import load_model
from bagoftricks.errors import WeightsError
from bagoftricks.models import build_model, load_pretrained
from tests.deploy.conftest import checkpoint_run, run_of


def _x(lm, b=3):
    s = lm.recipe.data.image_size
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(5))


def test_safetensors_holds_weights_and_what_is_needed_to_use_them(small_run, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["export", str(small_run), "--format", "safetensors", "--out", str(out), "--ema"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "ema" and report["bytes"] == out.stat().st_size
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "resnet20" and meta["variant"] == "D" and meta["format"] == "bagoftricks"
    assert json.loads(meta["classes"]) == [f"class_{k}" for k in range(4)]
    assert json.loads(meta["image_size"]) == 16 and len(json.loads(meta["mean"])) == 3
    model = build_model("resnet20", 4, variant="D", width=4)
    assert "bagoftricks export" in load_pretrained(model, out)
    ema = load_model(small_run, use_ema=True).model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ema.state_dict().values()))


def test_timm_export_of_a_resnet50d_loads_strictly_with_the_same_logits(r50d_run, tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not installed (dev extra)")
    out = tmp_path / "r50d.pth"
    with pytest.warns(UserWarning, match="BatchNorm running statistics look untrained"):  # one training step
        rep = bexport.export_run(r50d_run, "timm", out)
    assert rep["loads_into"] == "timm.create_model('resnet50d', num_classes=10)"
    assert rep["max_rel_diff"] <= 1e-5 and rep["checked_images"] == 4  # loaded into timm and compared
    theirs = timm.create_model("resnet50d", num_classes=10)
    theirs.load_state_dict(torch.load(out, weights_only=True), strict=True)
    lm = load_model(r50d_run)
    x = _x(lm)
    with torch.no_grad():
        assert (theirs.eval()(x) - lm.model(x)).abs().max().item() <= 1e-5


def test_torchvision_export_and_a_model_without_counterpart(tmp_path, small_run, capsys):
    import torchvision
    run = run_of(tmp_path / "r18", "model.arch=resnet18", "model.variant=B", "model.width=0")
    out = tmp_path / "r18.pth"
    bexport.export_run(run, "torchvision", out)
    tv = torchvision.models.resnet18(num_classes=4)
    tv.load_state_dict(torch.load(out, weights_only=True), strict=True)
    lm = load_model(run)
    with torch.no_grad():
        assert (tv.eval()(_x(lm)) - lm.model(_x(lm))).abs().max().item() <= 1e-5
    bad = tmp_path / "r20.pth"
    assert main(["export", str(small_run), "--format", "torchvision", "--out", str(bad)]) == 2
    assert "resnet20-D has no torchvision counterpart" in capsys.readouterr().err
    assert not bad.exists()


def test_onnx_is_checked_with_onnxruntime(small_run, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra)")
    out = tmp_path / "m.onnx"
    rep = bexport.export_run(small_run, "onnx", out)
    assert rep["opset"] == bexport.ONNX_OPSET and rep["max_abs_diff"] <= 1e-4 and rep["checked_batches"] == [1, 3]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    lm = load_model(small_run)
    x = _x(lm, 5)  # a batch size of its own: the axis is dynamic
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        assert (got - lm.model(x)).abs().max().item() <= 1e-4


def test_torch_export_program_runs_without_bagoftricks(small_run, tmp_path):
    out = tmp_path / "m.pt2"
    rep = bexport.export_run(small_run, "torch.export", out)
    assert rep["max_abs_diff"] <= 1e-5
    module = torch.export.load(str(out)).module()
    lm = load_model(small_run)
    with torch.no_grad():
        assert torch.allclose(module(_x(lm, 4)), lm.model(_x(lm, 4)), atol=1e-5)


def test_a_failed_write_leaves_no_file(tmp_path):
    """The ONNX and torch.export writers write and check under a temporary name (atomic_path)."""
    target = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="check failed"), bexport.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("check failed")
    assert list(tmp_path.iterdir()) == []
    with bexport.atomic_path(target) as tmp:
        tmp.write_bytes(b"a model")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and target.read_bytes() == b"a model"


def test_a_disagreeing_file_is_a_failure():
    from bagoftricks.deploy import verify
    model = torch.nn.Linear(3, 2).eval()
    with pytest.raises(verify.RunFailure, match=r"disagrees with PyTorch: logits differ by up to .* of their scale > "
                                                r"0\.001.*nothing written"):
        verify.compare(model, lambda x: model(x) + 0.01 * model(x).abs().max(), torch.Size([2, 3]), "the test model")
    assert verify.compare(model, model, torch.Size([2, 3]), "the test model")["max_abs_diff"] == 0.0


def test_the_check_is_relative_to_each_image_s_logits_and_warns_on_untrained_ones():
    """A correct export of huge logits passes with a warning (the barely trained ResNet-50-D's ONNX file differed
    by 7e13 at logits of 3e20); non-finite logits of PyTorch are left out, of the export where PyTorch's are
    finite fail."""
    from bagoftricks.deploy import verify
    huge = torch.nn.Linear(3, 4).eval()
    with torch.no_grad():
        huge.weight.mul_(1e20)
    with pytest.warns(UserWarning, match=r"logits reach .*e\+20.*BatchNorm running statistics look untrained"):
        rep = verify.compare(huge, lambda x: huge(x) * (1 + 2e-7), torch.Size([2, 3]), "the ONNX model")
    assert rep["max_abs_diff"] > 1e12 and rep["max_rel_diff"] < 1e-6 and len(rep["warnings"]) == 1
    small = torch.nn.Linear(3, 4).eval()
    ref = torch.tensor([[1.0, 0.0, -2.0, 3.0], [float("inf"), 1.0, 0.0, 0.0]])
    off = torch.zeros_like(ref)
    off[0, 1] = 2.5e-3  # at a logit of 0 in an image whose largest |logit| is 3: 2.5e-3 / (0 + 3) < 1e-3
    assert verify.agreement(ref, ref + off)[1] < 1e-3
    off[0, 1] = 4e-3
    assert verify.agreement(ref, ref + off)[1] > 1e-3
    assert verify.agreement(ref, torch.full_like(ref, float("nan")))[1] == float("inf")
    assert verify.agreement(ref, ref)[2] == 1  # the image with an infinite logit is not compared
    with pytest.warns(UserWarning, match="not finite for 4 of 4 check images, which were not compared"):
        rep = verify.compare(lambda x: small(x) * float("inf"), lambda x: small(x), torch.Size([2, 3]), "the model")
    assert rep["checked_images"] == 0


def test_every_format_of_a_barely_trained_resnet50d_is_written_and_verified(r50d_run, tmp_path, recwarn):
    """One training step: BN statistics near their start, logits far beyond a trained model's (~1e33 here). The
    formats with a ResNet-50-D counterpart are written and checked (timm's: the test above; torch.export: the
    trained model's test below, as its graph is the same at any scale); torchvision has none, and says so."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra)")
    pytest.importorskip("timm", reason="timm is not installed (dev extra)")
    outs = {"safetensors": "m.safetensors", "onnx": "m.onnx", "hf": "hf"}
    for fmt, name in outs.items():
        rep = bexport.export_run(r50d_run, fmt, tmp_path / name)
        checks = [rep["timm"], rep["bagoftricks"]] if fmt == "hf" else [rep]
        for check in checks:
            assert check["max_rel_diff"] <= 1e-5 and check["checked_images"] == 4
            assert "BatchNorm running statistics look untrained" in check["warnings"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(outs.values())
    with pytest.raises(WeightsError, match="resnet50-D has no torchvision counterpart"):
        bexport.export_run(r50d_run, "torchvision", tmp_path / "tv.pth")
    assert not (tmp_path / "tv.pth").exists()


def test_every_format_of_a_trained_model_is_written_and_verified(grey_r18d, tmp_path, recwarn):
    """BN statistics set as training sets them: logits of a trained model's scale, no warning (the hf folder of
    this model: tests/deploy/test_hf.py). ONNX on a small model of the same kind: its exporter's time grows with
    the graph, not the widths."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra)")
    pytest.importorskip("timm", reason="timm is not installed (dev extra)")
    small = checkpoint_run(tmp_path / "small", {"arch": "resnet20", "variant": "D", "width": 4}, ["a", "b"],
                           image_size=16)
    cases = [(grey_r18d, "safetensors", "m.safetensors"), (grey_r18d, "timm", "m.pth"),
             (grey_r18d, "torch.export", "m.pt2"), (small, "onnx", "m.onnx")]
    for run, fmt, name in cases:
        rep = bexport.export_run(run, fmt, tmp_path / name)
        assert rep["max_rel_diff"] <= 1e-5 and rep["checked_images"] == 4 and "warnings" not in rep
    assert not [w for w in recwarn if "look untrained" in str(w.message)]


def test_an_existing_file_is_kept_unless_forced(small_run, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"mine")
    assert main(["export", str(small_run), "--format", "safetensors", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["export", str(small_run), "--format", "safetensors", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"mine"


def test_a_missing_run_is_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "none" in capsys.readouterr().err


def test_run_folders_record_their_classes(small_run):
    assert json.loads((small_run / "classes.json").read_text()) == [f"class_{k}" for k in range(4)]
