"""export --format hf: a folder timm loads with the run's logits, that starts runs and predicts, written atomically."""
import json

import pytest
import torch
from PIL import Image

import bagoftricks
from bagoftricks.cli import main
from bagoftricks.deploy import export as bexport
from bagoftricks.deploy import hf, verify
from bagoftricks.engine import load_model
from bagoftricks.engine.inference import evaluate_checkpoint
from bagoftricks.engine.setup import setup_model
from bagoftricks.errors import RunFailure
from bagoftricks.recipe import from_dict, to_dict
from tests.deploy.conftest import GREY_CLASSES as CLASSES


@pytest.fixture(scope="module")
def grey_folder(grey_r18d, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "r18d-hf"
    return out, bexport.export_run(grey_r18d, "hf", out)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_the_folder_is_timm_s_layout_for_grey_images(grey_folder):
    out, rep = grey_folder
    assert rep["architecture"] == "resnet18d" and rep["files"] == ["README.md", "config.json", "model.safetensors"]
    assert rep["loads_into"] == f"timm.create_model('local-dir:{out}', pretrained=True)"
    for check in (rep["timm"], rep["bagoftricks"]):
        assert check["max_rel_diff"] <= verify.RTOL and "warnings" not in check
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "resnet18d" and cfg["num_classes"] == 3 and cfg["num_features"] == 512
    assert cfg["model_args"] == {"in_chans": 1}  # without it timm builds an RGB stem
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [1, 32, 32] and pre["crop_pct"] == 1.0 and pre["interpolation"] == "bilinear"
    assert pre["mean"] == pytest.approx([72.9404 / 255]) and pre["std"] == pytest.approx([90.0212 / 255])
    assert pre["label_names"] == CLASSES and pre["first_conv"] == "conv1.0" and pre["classifier"] == "fc"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_our_run_to_timm_and_back_to_a_run_gives_the_same_logits(grey_r18d, grey_folder):
    timm = pytest.importorskip("timm", reason="timm is not installed (dev extra)")
    out, _ = grey_folder
    ref_model = load_model(grey_r18d).model
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = ref_model(x)
        _close(timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x), ref)
    r = from_dict({**to_dict(load_model(grey_r18d).recipe), "model": {"arch": "resnet18", "variant": "D",
                                                                       "pretrained": f"local-dir:{out}"}})
    again = setup_model(r, 3, 1, torch.device("cpu"), classes=CLASSES).eval()  # what a run with it starts from
    assert "pretrained weights from local-dir:" in again.pretrained_note
    assert "timm resnet18d layout" in again.pretrained_note and "re-initialised" not in again.pretrained_note
    with torch.no_grad():
        _close(again(x), ref)


def test_load_model_and_predict_use_the_folder_s_labels_and_preprocessing(grey_r18d, grey_folder, tmp_path, capsys):
    out, _ = grey_folder
    run, folder = load_model(grey_r18d), bagoftricks.load_model(f"local-dir:{out}")
    assert folder.classes == CLASSES and folder.checkpoint == out
    assert folder.transform.mean == pytest.approx(run.transform.mean) and folder.transform.out_size == 32
    images = torch.randint(0, 256, (3, 1, 40, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    _close(folder.logits(images), run.logits(images))
    assert [p[0][0] for p in folder.predict(images)] == [p[0][0] for p in run.predict(images)]
    png = tmp_path / "x.png"
    Image.fromarray(images[0, 0].numpy()).save(png)
    assert main(["predict", "--checkpoint", f"local-dir:{out}", str(png), "--format", "json", "--topk", "3"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert sorted(t["class"] for t in top) == sorted(CLASSES)


def test_a_model_timm_lacks_gets_our_architecture_and_a_model_card(small_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(small_run), "--format", "hf", "--out", str(out), "--ema"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["architecture"] == "bagoftricks:resnet20d" and "timm" not in rep and rep["weights"] == "ema"
    card = (out / "README.md").read_text()
    last = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"**{last['ema_val_top1']:.2f} %** top-1" in card and "`tricks.ema_decay: 0.5`" in card
    assert f"bagoftricks export {small_run} --format hf --out {out} --ema" in card and "arch: resnet20" in card
    assert "EMA weights of step-" in card and "library_name: bagoftricks" in card
    ema = load_model(small_run, use_ema=True)
    back = load_model(f"local-dir:{out}")
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    _close(back.logits(images), ema.logits(images))
    assert main(["eval", "--checkpoint", f"local-dir:{out}", "--device", "cpu"]) == 0  # the recipe names its data
    assert json.loads(capsys.readouterr().out)["top1"] == evaluate_checkpoint(small_run, use_ema=True,
                                                                            device="cpu")["top1"]


def test_an_existing_folder_is_replaced_only_when_forced_and_only_a_model_folder(small_run, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", str(small_run), "--format", "hf", "--out", str(out)]
    assert main(args) == 2 and "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 2 and "is a folder that is not a model folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main([*args, "--force"]) == 0 and main([*args, "--force"]) == 0  # an empty folder, then a model folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"] and (out / "config.json").is_file()


def test_a_failing_check_leaves_nothing(small_run, tmp_path, monkeypatch):
    def disagree(*args):
        raise RunFailure("the model folder read back disagrees with PyTorch; nothing written")
    monkeypatch.setattr(hf, "check_module", disagree)
    with pytest.raises(RunFailure, match="nothing written"):
        bexport.export_run(small_run, "hf", tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_timm_wrote_predicts_with_its_own_framing_and_labels(tmp_path, capsys):
    timm = pytest.importorskip("timm", reason="timm is not installed (dev extra)")
    from timm.models._hub import save_for_hf
    torch.manual_seed(0)
    theirs = timm.create_model("resnet18d", num_classes=3, in_chans=1).eval()
    save_for_hf(theirs, str(tmp_path / "t"), model_config={"label_names": ["cat", "dog", "owl"]})
    lm = bagoftricks.load_model(f"local-dir:{tmp_path / 't'}")
    t = lm.transform  # timm's pretrained_cfg: 224 px, crop_pct 0.875, bicubic, its grey mean/std on 0..255
    assert (t.out_size, t.resize_size, t.interpolation) == (224, 256, "bicubic") and lm.classes == ["cat", "dog", "owl"]
    assert t.mean == pytest.approx((0.449 * 255,)) and t.std == pytest.approx((0.226 * 255,))
    images = torch.randint(0, 256, (2, 1, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        _close(lm.logits(images), theirs((images.float() / 255 - 0.449) / 0.226))
    assert main(["eval", "--checkpoint", f"local-dir:{tmp_path / 't'}"]) == 2
    assert "not written by bagoftricks records no training data" in capsys.readouterr().err
