"""The one-GPU Fashion-MNIST recipes (recipes/fmnist/gpu-*.yaml) load, say what they promise, and train a few
steps on the CPU, cut by --set: two steps of 64 images, evaluated on 64 held-out training images, eager (their
train.compile: step is tested with inductor in test_compiled_step.py; a CPU step of 1,024 images takes seconds)."""
from __future__ import annotations

import math

import pytest

from bagoftricks import recipe
from bagoftricks.engine import train

GPU_RECIPES = [n for n in recipe.shipped_recipes() if n.startswith("fmnist/gpu-")]
CUT = ["train.device=cpu", "train.epochs=1", "tricks.warmup_epochs=0.5", "train.batch_size=64",
       "data.train_limit=128", "data.holdout=64", "train.compile=none", "train.threads=1"]


def test_there_are_gpu_recipes():
    assert GPU_RECIPES == ["fmnist/gpu-15s", "fmnist/gpu-5s"]


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_a_gpu_recipe_is_airbench_at_large_batch_captured_in_bf16(name):
    r = recipe.load(name)
    assert (r.train.compile, r.train.precision, r.train.batch_size) == ("step", "bf16", 1024)
    assert r.data.name == "fashion_mnist" and r.data.in_memory == "auto"   # held on the device, augmented there
    assert r.tricks.tta == "flip_shift" and r.model.arch == "airbench" and r.optim.name == "sgd"
    # airbench's lr rule: 11.5 per 1024 examples of a summed loss, divided by 1 + 1/(1 - momentum)
    assert r.optim.lr * 1024 / 256 == pytest.approx(11.5 / (1 + 1 / (1 - r.optim.momentum)), rel=1e-3)
    assert r.tricks.warmup_epochs == pytest.approx(0.23 * r.train.epochs, abs=0.01)
    assert r.schedule.floor == pytest.approx(0.07 * r.optim.lr * 4, rel=1e-3)


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_a_gpu_recipe_trains_a_few_steps_on_the_cpu(name, tmp_path):
    final = train(recipe.load(name, CUT), tmp_path / "run", progress=False)
    assert final["epoch"] == 1 and math.isfinite(final["train_loss"]) and "val_tta_top1" in final
