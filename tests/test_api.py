"""The public face: `import bagoftricks` alone trains, evaluates, predicts and exports, as the README shows."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bagoftricks
from bagoftricks.errors import RecipeError, UsageError
from bagoftricks.recipe import from_dict

ROOT = Path(__file__).resolve().parents[1]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- python-api: executed by tests/test_api.py -->\n```python\n(.*?)```", text, re.S)
    assert m, "README lost its Python API block"
    return m.group(1)


def test_the_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block(), "README.md", "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    run = bagoftricks.Run(tmp_path / "runs" / "notebook")
    assert run.finished and 10.0 < run.top1 <= 100.0 and len(run.metrics) == 1
    assert (tmp_path / "runs" / "notebook.onnx").stat().st_size > 0
    assert "resnet50d" in out and any(c in out for c in ("Ankle boot", "Sneaker", "Trouser", "Pullover"))


def test_import_loads_no_torch_and_every_public_name_resolves():
    code = ("import sys, bagoftricks\nassert 'torch' not in sys.modules\n"
            "names = [n for n in bagoftricks.__all__ if n != 'Recipe' and n != 'LoadedModel']\n"
            "[getattr(bagoftricks, n) for n in names]\nassert 'torch' not in sys.modules, 'api imported torch'\n"
            "bagoftricks.LoadedModel\nassert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_public_names_do_not_shadow_subpackages():
    subpackages = {p.stem if p.is_file() else p.name for p in Path(bagoftricks.__file__).parent.iterdir()
                   if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert not subpackages & set(bagoftricks.__all__), subpackages & set(bagoftricks.__all__)


@pytest.mark.parametrize("name,variant", [("resnet50d", "D"), ("resnet50c", "C"), ("resnet18d", "D"),
                                          ("resnet20b", "B"), ("resnet50", "A")])
def test_build_model_takes_timm_variant_names(name, variant):
    from bagoftricks.models import build_model
    base = name.rstrip("abcd") if name[-1] in "abcd" else name
    got = bagoftricks.build_model(name, num_classes=7, in_channels=1)
    want = build_model(base, 7, 1, variant=variant)
    assert str(got) == str(want)
    assert [t.shape for t in got.state_dict().values()] == [t.shape for t in want.state_dict().values()]


def test_a_variant_name_and_another_variant_is_an_error():
    with pytest.raises(ValueError, match="resnet50d.*variant D"):
        bagoftricks.build_model("resnet50d", variant="B")
    with pytest.raises(RecipeError, match="model.arch 'resnet50d' is ResNet variant D"):
        from_dict({"model": {"arch": "resnet50d", "variant": "B"}})


def test_recipes_take_variant_names():
    r = bagoftricks.load_recipe(None, ["model.arch=resnet18d"])
    assert (r.model.arch, r.model.variant) == ("resnet18", "D")


def test_list_models_filters_and_adds_variants():
    assert bagoftricks.list_models("resnet50") == ["resnet50"]
    assert bagoftricks.list_models("resnet50?", variants=True) == ["resnet50a", "resnet50b", "resnet50c", "resnet50d"]
    assert "airbench" in bagoftricks.list_models() and "resnet50d" not in bagoftricks.list_models()


def test_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UsageError, match="not a run folder"):
        bagoftricks.Run(tmp_path)


def test_predict_checks_its_input(tmp_path):
    run = bagoftricks.train(bagoftricks.load_recipe(None, [
        "data.name=synthetic", "data.image_size=16", "data.synthetic_samples=32", "data.num_classes=3",
        "model.arch=resnet8", "model.width=4", "train.epochs=1", "train.batch_size=16", "data.augment=small"]),
        tmp_path / "r", progress=False)
    m = run.load_model()
    images = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    top = m.predict(images, topk=2)
    assert len(top) == 2 and all(len(t) == 2 and t[0][1] >= t[1][1] for t in top)
    assert m.predict(images[0], topk=1)[0][0][0] in m.classes
    with pytest.raises(UsageError, match="uint8"):
        m.predict(images.float())
    with pytest.raises(UsageError, match="3-channel"):
        m.predict(images[:, :1])
