"""export: every format loads where it promises and gives the model's logits; failures leave no file."""
import json

import pytest
import torch
from safetensors import safe_open

from bagoftricks.cli import main
from bagoftricks.deploy import export as bexport
from bagoftricks.engine import load_model
from bagoftricks.models import build_model, load_pretrained
from tests.deploy.conftest import run_of


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
    rep = bexport.export_run(r50d_run, "timm", out)
    assert rep["loads_into"] == "timm.create_model('resnet50d', num_classes=10)"
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
    with pytest.raises(verify.RunFailure, match="disagrees with PyTorch: max abs logit difference"):
        verify._compare(model, lambda x: model(x) + 0.01, torch.Size([2, 3]), "the test model")
    assert verify._compare(model, model, torch.Size([2, 3]), "the test model") == 0.0


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
