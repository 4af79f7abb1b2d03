"""Model folders (timm's Hugging Face Hub layout): local-dir:, hf-hub: through the Hub cache, and refusals.

Nothing here reaches the network: HF_HUB_OFFLINE is set, and the Hub cache is a folder the tests lay
out as huggingface_hub does (models--ORG--NAME/refs/main, snapshots/REVISION/...).
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bagoftricks.errors import WeightsError
from bagoftricks.models import build_model, folder_model, load_pretrained
from bagoftricks.models.hub import Spec, parse_spec

timm = pytest.importorskip("timm", reason="timm is not installed (dev extra)")
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """A folder written by timm itself (save_for_hf): resnet18d for 1-channel images, 3 named classes, the
    weights as pytorch_model.bin, bicubic resizing, timm's grey statistics."""
    from timm.models._hub import save_for_hf
    torch.manual_seed(0)
    model = timm.create_model("resnet18d", num_classes=3, in_chans=1).eval()
    folder = tmp_path_factory.mktemp("timm") / "r18d"
    save_for_hf(model, str(folder), model_config={"label_names": ["cat", "dog", "owl"]}, safe_serialization=False)
    return folder, model


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, timm_folder):
    """A Hub cache holding timm_folder as the repository org/r18d at REVISION (its main branch)."""
    repo = tmp_path / "hub" / "models--org--r18d"
    shutil.copytree(timm_folder[0], repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


@pytest.mark.parametrize("text,spec", [
    ("local-dir:models/r18", Spec("local-dir", "models/r18")),
    ("local-dir:/a/b@c:d", Spec("local-dir", "/a/b@c:d")),  # a path is taken as written
    ("hf-hub:org/name", Spec("hf-hub", "org/name")),
    ("hf-hub:org/name@v1.0", Spec("hf-hub", "org/name", "v1.0")),
    ("runs/s1", None), ("C:/weights.pth", None),
])
def test_specs(text, spec):
    assert parse_spec(text) == spec
    assert spec is None or str(spec) == text


@pytest.mark.parametrize("text", ["hf-hub:name", "hf-hub:org/", "hf-hub:a/b/c", "local-dir:"])
def test_malformed_specs_say_how_to_write_them(text):
    with pytest.raises(WeightsError, match="hf-hub:ORG/NAME|local-dir:DIR"):
        parse_spec(text)


def test_a_folder_timm_wrote_is_built_with_its_classes_and_preprocessing(timm_folder):
    folder, theirs = timm_folder
    fm = folder_model(f"local-dir:{folder}")
    c = fm.config
    assert c.classes == ["cat", "dog", "owl"] and c.in_channels == 1 and c.model == {"arch": "resnet18", "variant": "D"}
    assert c.image_size == 224 and c.crop_ratio == 0.875 and c.interpolation == "bicubic"
    assert c.mean == pytest.approx((0.449 * 255,)) and c.recipe is None
    assert "timm resnet18d layout" in fm.what
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fm.model.eval()(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_a_folder_starts_a_run_of_other_classes_and_channels(timm_folder):
    model = build_model("resnet18", 5, 3, variant="D")
    line = load_pretrained(model, f"local-dir:{timm_folder[0]}", classes=["a", "b", "c", "d", "e"])
    assert "model folder" in line and "timm resnet18d layout" in line
    assert "adapted from 1 to 3 channels" in line and "classifier head fc re-initialised" in line


def test_the_hub_cache_is_read_offline_by_branch_and_by_revision(hub_cache, timm_folder):
    for spec in ("hf-hub:org/r18d", f"hf-hub:org/r18d@{REVISION}"):
        fm = folder_model(spec)
        assert fm.folder == hub_cache / "models--org--r18d" / "snapshots" / REVISION
        assert fm.config.classes == ["cat", "dog", "owl"]
    assert "pretrained weights from hf-hub:org/r18d (model folder" in load_pretrained(
        build_model("resnet18", 3, 1, variant="D"), "hf-hub:org/r18d")


def test_hf_home_names_the_cache_too(hub_cache, monkeypatch, tmp_path):
    shutil.move(str(hub_cache), str(tmp_path / "home" / "hub"))
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert folder_model("hf-hub:org/r18d").config.architecture == "resnet18d"


def test_offline_and_not_cached_is_one_clear_error(hub_cache):
    with pytest.raises(WeightsError, match=r"hf-hub:org/other: not in the Hugging Face cache \(.*hub\) and "
                                           r"HF_HUB_OFFLINE is set"):
        folder_model("hf-hub:org/other")
    with pytest.raises(WeightsError, match="hf-hub:org/r18d@v2: not in the Hugging Face cache"):
        folder_model("hf-hub:org/r18d@v2")


def _config(folder, **change):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(change)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change,say", [
    ({"model_args": {"in_chans": 1, "stem_width": 32}}, r"model_args stem_width=32 change the network"),
    ({"model_args": {"global_pool": "max"}}, r"model_args global_pool='max'"),
    ({"architecture": "vit_base_patch16_224"}, r"architecture 'vit_base_patch16_224' is not one we build"),
    ({"label_names": ["cat"]}, r"1 label_names for 3 classes"),
    ({"pretrained_cfg": {"input_size": [1, 224, 160]}}, r"input_size \[1, 224, 160\]: a square"),
])
def test_a_config_we_cannot_honour_is_refused_naming_the_value(timm_folder, tmp_path, change, say):
    folder = shutil.copytree(timm_folder[0], tmp_path / "m")
    _config(folder, **change)
    with pytest.raises(WeightsError, match=say) as e:
        folder_model(f"local-dir:{folder}")
    assert "config.json" in str(e.value)


def test_folders_that_are_not_model_folders(tmp_path, timm_folder):
    with pytest.raises(WeightsError, match="nothing: not found"):
        folder_model(f"local-dir:{tmp_path / 'nothing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json, so not a model folder"):
        folder_model(f"local-dir:{tmp_path / 'empty'}")
    bare = shutil.copytree(timm_folder[0], tmp_path / "bare")
    (bare / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsError, match=r"a model folder without weights \(none of model.safetensors"):
        folder_model(bare)  # a plain folder holding config.json reads as local-dir:
