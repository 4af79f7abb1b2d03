"""Every recipe field a transfer run reads (job.READ) changes what it builds or does; every other field is
refused when set — the allow-list covers fields added to the recipe later, which these tests then name."""
import pytest
import torch

from bagoftricks import recipe
from bagoftricks.engine.derive import autocast
from bagoftricks.errors import RecipeError
from bagoftricks.seeds import derive_seed
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.augment import apply, augmentation
from bagoftricks.transfer.job import READ, READ_BY_LOOP, READ_HERE, check_transfer, setup_transfer
from tests.test_wiring import _tensor_sig
from tests.transfer.conftest import tiny

CPU = torch.device("cpu")


def observe(r: recipe.Recipe) -> dict:
    job = setup_transfer(r, CPU)
    m, task, idx = job.model, job.step.task, list(range(r.train.batch_size))
    torch.manual_seed(derive_seed(r.train.seed, "transfer-step", 0, 0))  # as the task's inputs() seeds step (0, 0)
    images, targets = tdata.load_batch(job.train, idx, task.augment)
    det = r.transfer.task == "detect"
    job.step.set_lr(0, 0)
    out = {
        "model": (str(m), [_tensor_sig(t) for t in m.state_dict().values()]),
        "sizes": (m.rpn.anchor_generator.sizes, m.roi_heads.box_roi_pool.canonical_scale) if det else None,
        "groups": [(g["name"], g["lr"], g["momentum"], g["nesterov"], g["weight_decay"], len(g["params"]))
                   for g in job.optimizer.param_groups],
        "lr": [round(job.step.set_lr(0, s), 12) for s in range(job.steps_per_epoch * r.train.epochs)],
        "batch": [(_tensor_sig(im), _tensor_sig(t["boxes"]), _tensor_sig(t["mask"])) for im, t in zip(images, targets)],
        "data": (len(job.train), len(job.test), _tensor_sig(job.test.images[-1])),
        "scaler": job.scaler.is_enabled(),
        "memory": [p.is_contiguous(memory_format=torch.channels_last) for p in m.parameters() if p.dim() == 4],
    }
    job.step.set_lr(0, 0)
    m.train()
    inputs = task.inputs(idx, 0, 0)
    with autocast(r.train.precision, CPU):   # as the step runs the forward pass
        outputs = task.forward(m, inputs)
    out["loss"] = round(task.loss(outputs, inputs).item(), 6)
    return out


# field -> (value a, value b, the observed aspect that must change, extra overrides for both)
CASES = {
    "model.arch": ("resnet20", "resnet32", "model", ()),
    "model.width": (4, 8, "model", ()),
    "model.variant": ("D", "A", "model", ()),
    "model.init": ("xavier", "kaiming", "model", ()),
    "model.activation": ("relu", "silu", "model", ()),
    "model.se_reduction": (0, 2, "model", ()),
    "model.groups": (1, 2, "model", ("model.arch=resnet50", "model.width=8")),
    "model.width_per_group": (0, 8, "model", ("model.arch=resnet50", "model.width=8", "model.groups=2")),
    "model.drop_path": (0.0, 0.5, "loss", ()),
    "data.image_size": (32, 40, "batch", ()),
    "data.flip": (0.5, 0.0, "batch", ()),
    "optim.lr": (0.02, 0.04, "lr", ()),
    "optim.momentum": (0.9, 0.5, "groups", ()),
    "optim.nesterov": (True, False, "groups", ()),
    "optim.weight_decay": (1e-4, 5e-4, "groups", ()),
    "schedule.kind": ("cosine", "step", "lr", ("schedule.milestones=[1]",)),
    "schedule.milestones": ([1], [2], "lr", ("schedule.kind=step", "train.epochs=3")),
    "schedule.gamma": (0.1, 0.5, "lr", ("schedule.kind=step", "schedule.milestones=[1]")),
    "schedule.floor": (0.0, 0.001, "lr", ()),
    "tricks.linear_scaling": (False, True, "lr", ()),
    "tricks.warmup_epochs": (0.0, 1.0, "lr", ()),
    "train.batch_size": (4, 2, "batch", ()),
    "train.seed": (0, 1, "model", ()),
    "train.precision": ("fp32", "fp16", "scaler", ()),
    "train.channels_last": (False, True, "memory", ()),
    "transfer.task": ("detect", "segment", "model", ()),
    "transfer.head": ("fcn", "deeplabv3", "model", ("transfer.task=segment",)),
    "model.pretrained": ("", "@backbone", "model", ()),
    "transfer.frozen_bn": (True, False, "model", ()),
    "transfer.trainable_layers": (3, 1, "groups", ()),
    "transfer.backbone_lr_mult": (1.0, 0.1, "groups", ()),
    "transfer.fpn_channels": (16, 8, "model", ()),
    "transfer.anchor_scale": (8.0, 4.0, "sizes", ()),
    "transfer.aux_weight": (0.5, 1.0, "loss", ("transfer.task=segment",)),
    "transfer.scale_jitter": (0.0, 0.3, "batch", ()),
    "transfer.train_scenes": (8, 12, "data", ()),
    "transfer.test_scenes": (4, 6, "data", ()),
}
# fields read by transfer's set-up whose effect needs a folder or a run: the test that shows it
OWN_TESTS = {
    "data.name": "test_readers.py::test_voc_detection_and_ade_segmentation_train_and_evaluate",
    "data.root": "test_shapes.py::test_shapes_folder_trains_in_both_layouts",
    "data.strict": "test_readers.py::test_voc_bad_sample_error_names_file_or_is_skipped",
    "train.eval_batch_size": "test_transfer_run.py::test_run_level_train_fields",
    "train.precision": "test_amp.py::test_low_precision_steps_keep_the_detector_heads_in_fp32",
}


def test_own_tests_exist():
    import importlib
    for where in OWN_TESTS.values():
        module, name = where.split("::")
        assert hasattr(importlib.import_module(f"tests.transfer.{module[:-3]}"), name), where


def test_every_field_is_read_and_wired_or_refused():
    keys = recipe.all_keys()
    assert sorted(set(READ) - set(keys)) == [], "READ names fields the recipe does not have"
    assert len(READ) == len(set(READ)) and not set(READ_HERE) & set(READ_BY_LOOP)
    assert sorted(set(READ_HERE) - set(CASES) - set(OWN_TESTS)) == [], "a field transfer reads has no wiring case"
    assert sorted(set(CASES) - set(READ_HERE)) == [], "a wiring case for a field transfer does not read"
    assert all(k.startswith("train.") for k in READ_BY_LOOP)


@pytest.mark.parametrize("field", sorted(CASES))
def test_field_changes_what_transfer_builds(field, backbone_run):
    a, b, aspect, extra = CASES[field]
    sub = lambda v: str(backbone_run) if v == "@backbone" else v
    ra = tiny(*extra, f"{field}={sub(a)}")
    rb = tiny(*extra, f"{field}={sub(b)}")
    oa, ob = observe(ra), observe(rb)
    assert oa[aspect] != ob[aspect], f"{field}: {a!r} -> {b!r} did not change {aspect}"


# a value other than the default for fields where the generic rule (choices, not, +1, half) does not fit
NAMED = {"tricks.distill_teacher": "/nowhere", "data.class_subset": [0, 1], "data.progressive_sizes": [24],
         "schedule.extended_from": [1], "optim.betas": [0.8, 0.99], "tricks.mix_off_epochs": 1,
         "model.width_mult": 0.5, "tricks.ema_decay": 0.9}
# and the other fields a valid recipe needs beside it
NEEDS = {"tricks.mix_off_epochs": ("tricks.mixup_alpha=0.2",), "tricks.lookahead_decay": ("tricks.lookahead_every=5",),
         "tricks.lookahead_ramp": ("tricks.lookahead_every=5",), "tricks.ema_warmup": ("tricks.ema_decay=0.9",)}


def _needs(field: str) -> tuple[str, ...]:
    """Other fields a valid recipe needs beside `field` (an optimizer's own fields need that optimizer)."""
    from bagoftricks.tricks.catalog import OPTIMIZERS, optim_fields
    section, name = field.split(".")
    if section == "optim" and name != "name":
        opt = next(o for o in OPTIMIZERS if name in optim_fields(o))
        return () if opt == "sgd" else (f"optim.name={opt}",)
    return NEEDS.get(field, ())


def _other(field: str):
    default = recipe.flat(recipe.Recipe())[field]
    if field in NAMED:
        return NAMED[field]
    if field in recipe.CHOICES:
        return next(c for c in recipe.CHOICES[field] if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default > 0 else 0.1
    raise AssertionError(f"{field}: no value other than {default!r} known: add one to NAMED")


@pytest.mark.parametrize("field", [k for k in recipe.all_keys() if k not in READ])
def test_every_other_field_is_refused_when_set(field):
    """Over recipe.all_keys(): a field added to the recipe later is refused until transfer reads it."""
    base = recipe.apply_overrides(tiny(), list(_needs(field)))
    r = recipe.apply_overrides(base, [f"{field}={_other(field)}"])
    with pytest.raises(RecipeError, match="transfer does not read this field") as e:
        check_transfer(r)
    first, _, also = str(e.value).partition("; also set and not read: ")
    assert first.startswith(f"{field}: ") or field in also.split(", "), str(e.value)


def test_augmentation_moves_boxes_and_masks_together():
    """A flip (p=1) moves a box and its label-map pixels to the mirrored place: x -> W - x."""
    mask = torch.zeros(10, 10, dtype=torch.uint8)
    mask[2:5, 1:4] = 3
    target = {"boxes": torch.tensor([[1.0, 2, 4, 5]]), "labels": torch.tensor([3]), "mask": mask}
    img = mask[None] * 50
    out_img, out = apply(augmentation(10, flip=1.0), img, target)
    assert out["boxes"].tolist() == [[6.0, 2.0, 9.0, 5.0]]
    assert torch.equal(out["mask"], mask.flip(-1)) and torch.equal(out_img, img.flip(-1))
