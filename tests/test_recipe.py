"""The recipe: defaults are the paper's §2 baseline, YAML round-trips, overrides are typed, bad values
are rejected with the field's name."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bagoftricks import recipe
from bagoftricks.recipe import Recipe, RecipeError


def test_default_is_paper_baseline():
    r = Recipe()
    assert (r.model.arch, r.model.variant, r.model.init) == ("resnet50", "A", "xavier")
    assert (r.optim.lr, r.optim.momentum, r.optim.nesterov, r.optim.weight_decay) == (0.1, 0.9, True, 1e-4)
    assert (r.train.epochs, r.train.batch_size) == (120, 256)
    assert r.schedule.kind == "step" and r.schedule.milestones == (30, 60, 90) and r.schedule.gamma == 0.1
    d = r.data
    assert (d.image_size, d.crop_area_min, d.flip, d.jitter, d.lighting) == (224, 0.08, 0.5, 0.4, 0.1)
    assert r.data.crop_ratio == pytest.approx(224 / 256)
    # every trick is off by default
    t = r.tricks
    assert not t.linear_scaling and not t.zero_gamma and not t.no_bias_decay
    assert t.warmup_epochs == 0 and t.label_smoothing == 0 and t.mixup_alpha == 0 and t.cutmix_alpha == 0
    assert t.distill_teacher == "" and t.ema_decay == 0 and t.cutout == 0 and t.randaugment_ops == 0
    assert r.train.precision == "fp32" and not r.train.channels_last
    recipe.validate(r)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Recipe().train.epochs = 3


def test_yaml_round_trip(tmp_path):
    r = recipe.apply_overrides(Recipe(), ["optim.lr=0.4", "schedule.milestones=[10,20]", "tricks.zero_gamma=true"])
    p = tmp_path / "r.yaml"
    p.write_text(recipe.dump(r))
    assert recipe.load(p) == r


def test_partial_yaml_keeps_defaults(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: 3\n")
    r = recipe.load(p)
    assert r.train.epochs == 3 and r.train.batch_size == 256


@pytest.mark.parametrize("item, key, value", [
    ("optim.lr=0.5", ("optim", "lr"), 0.5),
    ("optim.lr=1", ("optim", "lr"), 1.0),
    ("train.epochs=7", ("train", "epochs"), 7),
    ("tricks.zero_gamma=yes", ("tricks", "zero_gamma"), True),
    ("tricks.no_bias_decay=false", ("tricks", "no_bias_decay"), False),
    ("schedule.milestones=5,9", ("schedule", "milestones"), (5.0, 9.0)),
    ("data.root=/tmp/x", ("data", "root"), "/tmp/x"),
    ("model.variant=D", ("model", "variant"), "D"),
])
def test_overrides_are_typed(item, key, value):
    r = recipe.apply_overrides(Recipe(), [item])
    got = getattr(getattr(r, key[0]), key[1])
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("item, needle", [
    ("optim.lrr=0.1", "optim.lr"),
    ("tricks.label_smothing=0.1", "tricks.label_smoothing"),
    ("trian.epochs=3", "train"),
])
def test_unknown_key_suggests(item, needle):
    with pytest.raises(RecipeError, match="did you mean") as e:
        recipe.apply_overrides(Recipe(), [item])
    assert needle in str(e.value)


def test_unknown_key_in_yaml_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert "bad.yaml" in str(e.value) and "optim.learning_rate" in str(e.value)


@pytest.mark.parametrize("item", ["train.epochs=abc", "train.epochs=2.5", "tricks.zero_gamma=maybe",
                                  "optim.lr=[1,2]"])
def test_wrong_type_names_field(item):
    with pytest.raises(RecipeError) as e:
        recipe.apply_overrides(Recipe(), [item])
    assert item.split("=")[0] in str(e.value)


# (override, field named in the error) — shared with the CLI test that checks exit code 2
INVALID = [
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.epochs=0", "train.epochs"),
    ("data.flip=1.5", "data.flip"),
    ("tricks.label_smoothing=1.0", "tricks.label_smoothing"),
    ("tricks.random_erasing=-0.1", "tricks.random_erasing"),
    ("data.name=imagenet21k", "data.name"),
    ("model.arch=resnet51", "model.arch"),
    ("model.variant=E", "model.variant"),
    ("train.precision=fp8", "train.precision"),
    ("schedule.kind=exp", "schedule.kind"),
    ("optim.momentum=1.0", "optim.momentum"),
    ("tricks.warmup_epochs=500", "tricks.warmup_epochs"),
    ("model.drop_path=1.0", "model.drop_path"),
    ("schedule.milestones=[60,30]", "schedule.milestones"),
    ("tricks.ema_decay=1.0", "tricks.ema_decay"),
    ("tricks.ema_warmup=true", "tricks.ema_warmup"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("model.freeze=layer5", "model.freeze"),
    ("optim.head_lr_mult=0", "optim.head_lr_mult"),
    ("tricks.tta=rotate", "tricks.tta"),
    ("data.class_subset=[3]", "data.class_subset"),
]


@pytest.mark.parametrize("arch, freeze, say", [
    ("resnet20", "layer4", r"resnet20 has 3 stages \(layer1..layer3\)"),
    ("mobilenet_v1", "stem", "freezes ResNet stages; mobilenet_v1 has none"),
])
def test_freeze_names_the_stages_the_model_has(arch, freeze, say):
    with pytest.raises(RecipeError, match=say):
        recipe.validate(recipe.apply_overrides(Recipe(), [f"model.arch={arch}", f"model.freeze={freeze}"]))
    assert recipe.validate(recipe.apply_overrides(Recipe(), ["model.arch=resnet20", "model.freeze=layer3"]))


@pytest.mark.parametrize("item, field", INVALID)
def test_invalid_values_name_field(item, field):
    with pytest.raises(RecipeError) as e:
        recipe.validate(recipe.apply_overrides(Recipe(), [item]))
    assert field in str(e.value)


def test_unknown_arch_suggests_close_name():
    with pytest.raises(RecipeError, match="resnet50"):
        recipe.validate(recipe.apply_overrides(Recipe(), ["model.arch=resnet51"]))


def test_dump_is_plain_yaml():
    d = yaml.safe_load(recipe.dump(Recipe()))
    assert set(d) == {"model", "data", "optim", "schedule", "tricks", "train", "transfer"}
    assert d["schedule"]["milestones"] == [30.0, 60.0, 90.0]


def test_loading_and_validating_does_not_import_torch(tmp_path):
    """The choice lists come from the torch-free catalogues of data/models/tricks, so checking a
    recipe (`bagoftricks show`) stays fast."""
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  arch: resnet20\n  variant: D\ndata:\n  name: cifar10\n  augment: small\n")
    code = ("import sys; from bagoftricks import recipe; "
            f"r = recipe.load({str(p)!r}, ['tricks.label_smoothing_form=uniform', 'schedule.kind=cosine']); "
            "recipe.validate(recipe.Recipe()); "
            "assert r.model.variant == 'D', r; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    src = str(Path(recipe.__file__).resolve().parents[1])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr



def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  arch: resnet20\n   variant: D\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert str(e.value) == f"{p}: not valid YAML: line 3, column 11: mapping values are not allowed here"
    p.write_text("model:\n  arch: resnet20\n  variant D\ntrain: {epochs: 2}\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert str(e.value) == (f"{p}: not valid YAML: line 4, column 1: could not find expected ':' "
                            f"(while scanning a simple key at line 3, column 3)")
    with pytest.raises(RecipeError, match=r"optim.lr=\[': the value is not valid YAML: line 1, column 2"):
        recipe.apply_overrides(Recipe(), ["optim.lr=["])
