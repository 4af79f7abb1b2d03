"""The training step reads nothing back to the host: metrics, skipped steps and the bad-step count
stay on the device and are read every train.log_every_steps steps (and at the end of an epoch).

On a GPU every host read (`.item()`, `bool(t)`, `.tolist()`, ...) waits for the device to catch
up. The property is checked on CPU by counting those reads: doubling the steps of an epoch must
not add any, whatever the precision and the tricks switched on.
"""

import pytest
import torch

from bagoftricks import recipe, tricks
from bagoftricks.engine import derive, loop, setup
from bagoftricks.tricks import cutmix as cutmix_module

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")


def _count_host_reads(monkeypatch, r, out) -> int:
    """Tensor reads during a whole run, except the batch's scalar draws (mixup or CutMix, λ, the
    box), which must come from a CPU generator: host numbers, never a device read-back."""
    n, paused = [0], [0]
    for name in READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            n[0] += 1 - paused[0]
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def host_draw(fn):
        def wrapped(*a, generator=None, **k):
            g = generator if generator is not None else a[-1]
            assert g.device.type == "cpu", f"{fn.__name__} drew from a {g.device} generator"
            paused[0] = 1
            try:
                return fn(*a, generator=generator, **k) if generator is not None else fn(*a, **k)
            finally:
                paused[0] = 0
        return wrapped

    monkeypatch.setattr(tricks, "choose_mix", host_draw(tricks.choose_mix))
    monkeypatch.setattr(tricks, "sample_lambda", host_draw(tricks.sample_lambda))
    monkeypatch.setattr(cutmix_module, "cutmix_box", host_draw(cutmix_module.cutmix_box))
    try:
        loop.train(r, out, progress=False)
    finally:
        monkeypatch.undo()
    return n[0]


def _recipe(samples: int, *overrides):
    base = {
        "model": {"arch": "resnet20", "width": 4},
        "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": samples, "augment": "small",
                 "num_classes": 4},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "log_every_steps": 1000},
    }
    return recipe.validate(recipe.apply_overrides(recipe.from_dict(base), list(overrides)))


@pytest.mark.parametrize("extra", [
    ("train.precision=fp32",),
    ("train.precision=bf16", "tricks.mixup_alpha=0.2", "tricks.cutmix_alpha=1.0", "tricks.label_smoothing=0.1",
     "tricks.ema_decay=0.9", "tricks.random_erasing=0.5", "tricks.lookahead_every=3",
     "data.flip_mode=alternate", "data.progressive_sizes=[12]"),
    ("train.precision=fp16",),
], ids=["fp32", "bf16-mixing-ema", "fp16"])
def test_host_reads_do_not_grow_with_the_steps(tmp_path, monkeypatch, extra):
    short = _count_host_reads(monkeypatch, _recipe(64, *extra), tmp_path / "short")   # 4 steps an epoch
    long = _count_host_reads(monkeypatch, _recipe(128, *extra), tmp_path / "long")    # 8 steps an epoch
    assert long == short, f"{long - short} more host reads for 8 more steps: something syncs per step"


def test_log_every_steps_adds_reads(tmp_path, monkeypatch):
    """The counter sees the loop's own read-backs: a read every step costs reads (test of the test)."""
    rare = _count_host_reads(monkeypatch, _recipe(128), tmp_path / "rare")
    every = _count_host_reads(monkeypatch, _recipe(128, "train.log_every_steps=1"), tmp_path / "every")
    assert every > rare


def test_optimizer_is_fused_where_torch_has_the_kernel():
    r = _recipe(64)
    model = derive.recipe_model(r, 4, 3)
    opt = setup.make_optimizer(r, model, 0.1)
    assert all(g["fused"] for g in opt.param_groups)
    assert tricks.skips_on_device(opt)
