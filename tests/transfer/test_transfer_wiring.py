"""Every recipe field a transfer run reads changes what it builds or does; every other one is refused
when set (job.IGNORED). The completeness test fails when a new transfer.* field has no case here."""
import pytest
import torch

from bagoftricks import recipe
from bagoftricks.errors import RecipeError
from bagoftricks.seeds import derive_seed
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.augment import apply, augmentation
from bagoftricks.transfer.job import IGNORED, check_transfer, setup_transfer
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
    }
    job.step.set_lr(0, 0)
    m.train()
    inputs = task.inputs(idx, 0, 0)
    out["loss"] = round(task.loss(task.forward(m, inputs), inputs).item(), 6)
    return out


# field -> (value a, value b, the observed aspect that must change, extra overrides for both)
CASES = {
    "model.width": (4, 8, "model", ()),
    "model.variant": ("D", "A", "model", ()),
    "data.image_size": (32, 40, "batch", ()),
    "data.flip": (0.5, 0.0, "batch", ()),
    "optim.lr": (0.02, 0.04, "lr", ()),
    "optim.momentum": (0.9, 0.5, "groups", ()),
    "optim.nesterov": (True, False, "groups", ()),
    "optim.weight_decay": (1e-4, 5e-4, "groups", ()),
    "schedule.kind": ("cosine", "step", "lr", ("schedule.milestones=[1]",)),
    "tricks.warmup_epochs": (0.0, 1.0, "lr", ()),
    "train.epochs": (2, 3, "lr", ()),
    "train.batch_size": (4, 2, "batch", ()),
    "train.seed": (0, 1, "model", ()),
    "transfer.task": ("detect", "segment", "model", ()),
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


def test_every_transfer_field_has_a_case():
    keys = [k for k in recipe.all_keys() if k.startswith("transfer.")]
    assert sorted(set(keys) - set(CASES)) == []
    assert not set(CASES) & set(IGNORED)


@pytest.mark.parametrize("field", sorted(CASES))
def test_field_changes_what_transfer_builds(field, backbone_run):
    a, b, aspect, extra = CASES[field]
    sub = lambda v: str(backbone_run) if v == "@backbone" else v
    ra = tiny(*extra, f"{field}={sub(a)}")
    rb = tiny(*extra, f"{field}={sub(b)}")
    oa, ob = observe(ra), observe(rb)
    assert oa[aspect] != ob[aspect], f"{field}: {a!r} -> {b!r} did not change {aspect}"


@pytest.mark.parametrize("field", IGNORED)
def test_fields_transfer_does_not_read_are_refused(field):
    named = {"tricks.label_smoothing_form": "uniform", "tricks.distill_teacher": "/nowhere", "data.augment": "small",
             "data.in_memory": "never", "train.precision": "bf16", "schedule.extended_from": [1],
             "model.freeze": "stem", "data.class_subset": [0, 1], "tricks.tta": "flip"}
    default = recipe.flat(recipe.Recipe())[field]
    if field in named:
        other = named[field]
    elif isinstance(default, bool):
        other = not default
    else:
        other = default + 1 if isinstance(default, int) else default / 2 if default > 0.5 else default + 0.1
    r = recipe.apply_overrides(tiny(), [f"{field}={other}"])
    with pytest.raises(RecipeError, match=f"{field}: transfer does not read this field"):
        check_transfer(r)


def test_augmentation_moves_boxes_and_masks_together():
    """A flip (p=1) moves a box and its label-map pixels to the mirrored place: x -> W - x."""
    mask = torch.zeros(10, 10, dtype=torch.uint8)
    mask[2:5, 1:4] = 3
    target = {"boxes": torch.tensor([[1.0, 2, 4, 5]]), "labels": torch.tensor([3]), "mask": mask}
    img = mask[None] * 50
    out_img, out = apply(augmentation(10, flip=1.0), img, target)
    assert out["boxes"].tolist() == [[6.0, 2.0, 9.0, 5.0]]
    assert torch.equal(out["mask"], mask.flip(-1)) and torch.equal(out_img, img.flip(-1))
