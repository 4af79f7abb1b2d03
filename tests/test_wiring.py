"""Every recipe field is wired: two different values change the model, the param groups, the data,
the targets, the loss, the lr curve or what the run does. A field nothing reads is a bug, and the
completeness test below fails when a new field has no case here."""
from __future__ import annotations

import json

import pytest
import torch

from bagoftricks import recipe
from bagoftricks.data import DataError
from bagoftricks.engine import classify, derive, loop, setup, step
from bagoftricks.checkpoint import list_checkpoints
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.files import read_jsonl
from bagoftricks.errors import NonFiniteLoss, TrainingInterrupted, UsageError
from tests.imagefolders import write_png_folder

BASE = {
    "model": {"arch": "resnet20", "width": 4},
    "data": {"name": "synthetic", "image_size": 16, "synthetic_samples": 64, "augment": "paper", "num_classes": 4},
    "optim": {"lr": 0.1},
    "train": {"epochs": 4, "batch_size": 16, "device": "cpu"},
}
CPU = torch.device("cpu")


def make(*overrides, base=None):
    r = recipe.from_dict(base or BASE)
    return recipe.validate(recipe.apply_overrides(r, list(overrides)))


def _tensor_sig(t: torch.Tensor):
    """Shape, sum, sum of squares and a position-weighted sum (so flips and shifts show)."""
    t = t.detach().double()
    w = torch.linspace(0.5, 1.5, t.numel(), dtype=torch.float64).view(t.shape) if t.numel() else t
    return (tuple(t.shape), round(t.sum().item(), 6), round((t * t).sum().item(), 6), round((t * w).sum().item(), 6))


def _groups(optimizer) -> list:
    """Each optimizer's type and its param groups' settings (every hyper-parameter, the number of tensors)."""
    from bagoftricks.tricks.optimizers import children
    plain = (int, float, str, bool, tuple)
    return [(type(opt).__name__, sorted((k, v) for k, v in g.items() if k != "params" and isinstance(v, plain)),
             len(g["params"])) for opt in children(optimizer) for g in opt.param_groups]


def observe(r: recipe.Recipe) -> dict:
    """What a recipe does before and during one training step, as comparable values.

    The loss is that of the engine's own training step (`TrainStep`, epoch 0 step 0), the function
    the loop and `bench` call.
    """
    t = setup.setup_training(r, CPU, DistInfo())
    steps, model, data = t.steps_per_epoch, t.model, t.data
    x, y = next(iter(data.train.epoch(0)))
    out = {
        "model": (str(model), [(_tensor_sig(p), p.stride()) for p in model.state_dict().values()]),
        "groups": _groups(t.optimizer),
        "lr": [round(derive.scheduled_lr(r, s, steps), 12) for s in range(derive.run_steps(r, steps))],
        "batch": (_tensor_sig(x), x.is_contiguous(memory_format=torch.channels_last), y.tolist(), steps,
                  type(data.train).__name__),
    }
    tx = next(iter(setup.bdata.eval_batches(data.test, 8, data.eval_transform, CPU)))[0]
    out["eval"] = _tensor_sig(tx)
    for name, epoch in (("first", 0), ("last", r.train.epochs - 1)):
        g = torch.Generator().manual_seed(7)
        xb, targets = classify.prepare_batch(r, x.clone(), y, data.num_classes, epoch, g, t.teacher is not None)
        out[f"prepared_{name}"] = (_tensor_sig(xb), None if targets is None else _tensor_sig(targets))
    out["loss"] = round(t.step((x.clone(), y), 0, 0).loss.item(), 7)
    return out


def differs(a: recipe.Recipe, b: recipe.Recipe) -> list[str]:
    oa, ob = observe(a), observe(b)
    return [k for k in oa if oa[k] != ob[k]]


# field -> (value a, value b, the observed aspect that must change, extra overrides for both)
CASES = {
    "model.arch": ("resnet20", "resnet32", "model", ()),
    "model.variant": ("A", "D", "model", ()),
    "model.width": (4, 8, "model", ()),
    "model.init": ("xavier", "kaiming", "model", ()),
    "model.activation": ("relu", "silu", "loss", ()),
    "model.se_reduction": (0, 2, "model", ()),
    "model.groups": (1, 2, "model", ()),
    "model.width_per_group": (0, 16, "model", ("model.arch=resnext50_32x4d", "model.width=0",
                                               "data.image_size=32")),
    "model.drop_path": (0.0, 0.5, "loss", ()),
    "model.width_mult": (1.0, 0.5, "model", ("model.arch=mobilenet_v1", "model.width=0", "data.image_size=32")),
    "model.stem": ("learned", "whiten", "model", ("model.arch=airbench",)),
    "model.pretrained": ("", "@teacher", "model", ("model.variant=D",)),
    "model.freeze": ("", "layer1", "groups", ()),
    "data.name": ("synthetic", "imagefolder", "batch", ("data.root=@folder",)),
    "data.train_limit": (0, 32, "batch", ()),
    "data.class_subset": ([], [3, 0], "model", ()),
    "data.image_size": (16, 12, "batch", ()),
    "data.progressive_sizes": ([], [8], "prepared_first", ()),
    "data.crop_ratio": (0.875, 0.5, "eval", ("data.name=imagefolder", "data.root=@folder")),
    "data.augment": ("paper", "small", "batch", ()),
    "data.crop_area_min": (0.08, 0.9, "batch", ()),
    "data.flip": (0.5, 0.0, "batch", ()),
    "data.flip_mode": ("random", "alternate", "batch", ()),
    "data.jitter": (0.4, 0.0, "batch", ()),
    "data.lighting": (0.1, 0.0, "batch", ()),
    "data.pad": (4, 1, "batch", ("data.augment=small",)),
    "data.num_classes": (4, 5, "model", ()),
    "data.synthetic_samples": (64, 48, "batch", ()),
    "data.in_memory": ("auto", "never", "batch", ("data.name=imagefolder", "data.root=@folder", "data.workers=0")),
    "data.decode": ("cpu", "device", "batch", ("data.name=imagefolder", "data.root=@folder", "data.workers=0")),
    "data.holdout": (0, 16, "eval", ()),
    "data.pad_mode": ("zeros", "reflect", "batch", ("data.augment=small",)),
    "model.bn_eps": (0.0, 1e-3, "model", ()),
    "model.bn_momentum": (0.0, 0.4, "model", ()),
    "model.dirac": (False, True, "model", ("model.arch=airbench", "model.width=4")),
    "model.stem_bias_epochs": (0.0, 1.0, "groups", ("model.arch=airbench", "model.width=4")),
    "optim.lr": (0.1, 0.2, "lr", ()),
    "optim.momentum": (0.9, 0.5, "groups", ()),
    "optim.nesterov": (True, False, "groups", ()),
    "optim.weight_decay": (1e-4, 5e-4, "groups", ()),
    "optim.head_lr_mult": (1.0, 10.0, "groups", ()),
    "optim.name": ("sgd", "adamw", "groups", ()),
    "optim.betas": ([0.9, 0.999], [0.8, 0.99], "groups", ("optim.name=adamw",)),
    "optim.eps": (1e-8, 1e-6, "groups", ("optim.name=adamw",)),
    "optim.trust_coefficient": (0.001, 0.01, "groups", ("optim.name=lars",)),
    "optim.muon_momentum": (0.95, 0.6, "groups", ("optim.name=muon",)),
    "optim.ns_steps": (5, 3, "groups", ("optim.name=muon",)),
    "optim.muon_takes": ("filters", "hidden", "groups", ("optim.name=muon",)),
    "optim.fallback": ("sgd", "adamw", "groups", ("optim.name=muon",)),
    "optim.fallback_lr_mult": (1.0, 0.5, "groups", ("optim.name=muon",)),
    "schedule.kind": ("step", "cosine", "lr", ()),
    "schedule.milestones": ([1, 2], [2, 3], "lr", ()),
    "schedule.gamma": (0.1, 0.5, "lr", ("schedule.milestones=[1]",)),
    "schedule.floor": (0.0, 0.01, "lr", ("schedule.kind=cosine",)),
    "schedule.extended_from": ([], [2], "lr", ("schedule.kind=cosine",)),
    "tricks.linear_scaling": (False, True, "lr", ()),
    "tricks.warmup_epochs": (0.0, 1.5, "lr", ()),
    "tricks.zero_gamma": (False, True, "model", ()),
    "tricks.no_bias_decay": (False, True, "groups", ()),
    "tricks.bn_lr_mult": (1.0, 4.0, "groups", ()),
    "tricks.bn_freeze_gamma": (False, True, "groups", ()),
    "tricks.label_smoothing": (0.0, 0.1, "loss", ()),
    "tricks.label_smoothing_form": ("paper", "uniform", "prepared_first", ("tricks.label_smoothing=0.2",)),
    "tricks.mixup_alpha": (0.0, 0.2, "prepared_first", ()),
    "tricks.cutmix_alpha": (0.0, 1.0, "prepared_first", ()),
    "tricks.mix_off_epochs": (0, 1, "prepared_last", ("tricks.mixup_alpha=0.4",)),
    "tricks.cutout": (0, 6, "prepared_first", ()),
    "tricks.random_erasing": (0.0, 1.0, "prepared_first", ()),
    "tricks.distill_teacher": ("", "@teacher", "loss", ()),
    "tricks.distill_temperature": (20.0, 2.0, "loss", ("tricks.distill_teacher=@teacher",)),
    "tricks.distill_hard_weight": (1.0, 0.0, "loss", ("tricks.distill_teacher=@teacher",)),
    "tricks.randaugment_ops": (0, 2, "batch", ()),
    "tricks.randaugment_magnitude": (9, 25, "batch", ("tricks.randaugment_ops=2",)),
    "train.epochs": (4, 6, "lr", ()),
    "train.steps": (0, 10, "lr", ()),
    "train.resized_at": ([8], [12], "lr", ("train.steps=24", "train.resized_from=[40]", "schedule.kind=cosine")),
    "train.resized_from": ([40], [60], "lr", ("train.steps=24", "train.resized_at=[8]", "schedule.kind=cosine")),
    "train.batch_size": (16, 8, "batch", ()),
    "train.seed": (0, 1, "model", ()),
    "train.precision": ("fp32", "bf16", "loss", ()),
    "train.channels_last": (False, True, "model", ()),
    "train.small_convs": ("native", "matmul", "model", ()),  # the computation: tests/models/test_small_conv.py
}

# Fields whose effect is on the run itself (files, devices, processes), each with its own test below.
RUN_LEVEL = {
    "model.sync_bn", "data.root", "data.strict", "data.download", "data.workers", "data.timeout",
    "tricks.ema_decay", "tricks.ema_warmup", "tricks.lookahead_every", "tricks.lookahead_decay",
    "tricks.lookahead_ramp",
    "train.compile", "train.device", "train.threads", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.eval_every", "train.eval_batch_size", "train.log_every_steps",
    "train.max_bad_steps", "train.resume", "tricks.tta", "train.budget",  # train.budget: tests/engine/test_length.py
}


def test_every_field_has_a_wiring_case():
    from tests.transfer.test_transfer_wiring import CASES as TRANSFER_CASES  # the transfer section's own cases
    covered = set(CASES) | RUN_LEVEL | {k for k in TRANSFER_CASES if k.startswith("transfer.")}
    missing = sorted(set(recipe.all_keys()) - covered)
    assert not missing, f"recipe fields without a wiring test: {missing}"
    assert not (set(CASES) & RUN_LEVEL)


def _write_folder(root, seed=0, size=20):
    return write_png_folder(root, 16, size, scale=120, offset=100, seed=seed)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    loop.train(make("train.epochs=1", "model.arch=resnet20", "model.variant=D"), out, progress=False)
    return out


def _subst(items, folder, teacher):
    return [i.replace("@folder", str(folder)).replace("@teacher", str(teacher)) for i in items]


@pytest.mark.parametrize("key", sorted(CASES))
def test_field_changes_what_it_promises(key, folder, teacher):
    a, b, aspect, extra = CASES[key]
    extra = _subst(extra, folder, teacher)
    va, vb = (_subst([json.dumps(v) if not isinstance(v, str) else v], folder, teacher)[0] for v in (a, b))
    ra = make(*extra, f"{key}={va}")
    rb = make(*extra, f"{key}={vb}")
    changed = differs(ra, rb)
    assert aspect in changed, f"{key}: {a!r} -> {b!r} changed {changed}, expected {aspect}"


@pytest.mark.parametrize("key, a, b", [("data.jitter", 0.4, 0.0), ("data.lighting", 0.1, 0.0)])
def test_jitter_and_lighting_apply_with_the_small_preset_too(key, a, b):
    # data.augment: small is pad-and-crop + flip, then the recipe's colour jitter and lighting (0 = off).
    assert "batch" in differs(make("data.augment=small", f"{key}={a}"), make("data.augment=small", f"{key}={b}"))


# ------------------------------------------------------------------------------ run-level fields
def test_sync_bn_converts_batchnorm_under_distributed():
    two = DistInfo(rank=0, world_size=2)
    m_off = setup.setup_model(make(), 4, 3, CPU, two)
    m_on = setup.setup_model(make("model.sync_bn=true"), 4, 3, CPU, two)
    kinds = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
    assert "SyncBatchNorm" in kinds(m_on) and "SyncBatchNorm" not in kinds(m_off)


def test_root_selects_the_folder(tmp_path):
    a = _write_folder(tmp_path / "a", seed=0)
    b = _write_folder(tmp_path / "b", seed=1)
    assert "batch" in differs(make("data.name=imagefolder", f"data.root={a}"),
                              make("data.name=imagefolder", f"data.root={b}"))


def test_strict_turns_a_skip_into_an_error(tmp_path):
    root = _write_folder(tmp_path / "f")
    (root / "train" / "class0" / "broken.png").write_bytes(b"")
    data = setup.build_data(make("data.name=imagefolder", f"data.root={root}"), CPU, DistInfo())
    assert [(split, f.rsplit("/", 1)[-1]) for split, f, _ in data.skipped] == [("train", "broken.png")]
    with pytest.raises(DataError, match="broken.png"):
        setup.build_data(make("data.name=imagefolder", f"data.root={root}", "data.strict=true"), CPU, DistInfo())


def test_download_fetches_missing_files(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, root, base_url=None):
        calls.append((name, root))
        raise DataError(f"offline: cannot fetch {name}")

    import bagoftricks.data.fetch as fetch
    monkeypatch.setattr(fetch, "download", fake_download)
    r_off = make("data.name=fashion_mnist", f"data.root={tmp_path}")
    with pytest.raises(DataError):
        setup.build_data(r_off, CPU, DistInfo())
    assert calls == []
    with pytest.raises(DataError):
        r_on = make("data.name=fashion_mnist", f"data.root={tmp_path}", "data.download=true")
        setup.build_data(r_on, CPU, DistInfo())
    assert calls and calls[0][0] == "fashion_mnist"


def test_workers_and_timeout_reach_the_loader(folder):
    r = make("data.name=imagefolder", f"data.root={folder}", "data.in_memory=never", "data.workers=1",
             "data.timeout=7")
    src = setup.build_data(r, CPU, DistInfo()).train
    assert (src.workers, src.timeout) == (1, 7.0)
    assert src.loader.num_workers == 1 and src.loader.timeout == 7.0
    src.close()


def test_ema_is_evaluated_alongside(tmp_path):
    loop.train(make("train.epochs=1"), tmp_path / "off", progress=False)
    loop.train(make("train.epochs=1", "tricks.ema_decay=0.5"), tmp_path / "on", progress=False)
    assert "ema_val_top1" not in read_jsonl(tmp_path / "off" / "metrics.jsonl")[0]
    assert "ema_val_top1" in read_jsonl(tmp_path / "on" / "metrics.jsonl")[0]


def test_ema_warmup_lets_the_average_follow_the_first_steps():
    def after_steps(warmup):
        t = setup.setup_training(make("tricks.ema_decay=0.999", f"tricks.ema_warmup={warmup}"), CPU, DistInfo())
        start = {n: p.detach().float().clone() for n, p in t.model.named_parameters()}
        batches = t.data.train.epoch(0)
        for s in range(4):
            t.step(next(batches), 0, s)
        moved = {n: (p.detach().float() - start[n]).norm() for n, p in t.model.named_parameters()}
        kept = {n: (t.ema.params[n] - start[n]).norm() for n in start}
        n = max(moved, key=lambda k: moved[k])        # the parameter the steps moved most
        return t.ema.num_updates, float(kept[n] / moved[n])

    (updates_off, off), (updates_on, on) = after_steps("false"), after_steps("true")
    assert updates_off == updates_on == 4
    assert off < 0.01                # 0.999: the average still sits on the initial weights
    assert on > 0.5                  # decays 0.1, 0.18, 0.25, 0.31: it follows the trained ones


def _weights_after_steps(r, n):
    t = setup.setup_training(r, CPU, DistInfo())
    batches = t.data.train.epoch(0)
    for s in range(n):
        x, y = next(batches)
        t.step((x, y), 0, s)
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


@pytest.mark.parametrize("key,a,b,extra", [
    ("tricks.lookahead_every", 0, 2, ("tricks.lookahead_ramp=0",)),
    ("tricks.lookahead_decay", 0.77, 0.3, ("tricks.lookahead_every=2", "tricks.lookahead_ramp=0")),
    ("tricks.lookahead_ramp", 0.0, 3.0, ("tricks.lookahead_every=2",)),
])
def test_lookahead_fields_change_the_trained_weights(key, a, b, extra):
    wa = _weights_after_steps(make(*extra, f"{key}={a}"), 2)
    wb = _weights_after_steps(make(*extra, f"{key}={b}"), 2)
    assert not torch.equal(wa, wb), key


def test_compile_wraps_the_model_or_compiles_the_step(tmp_path, monkeypatch):
    # none: nothing; model: the module; step: the forward + loss function (engine.compiled; tests/engine/
    # test_compiled_step.py runs it with inductor)
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m, *a, **k: seen.append(m) or m)
    loop.train(make("train.epochs=1"), tmp_path / "a", progress=False)
    assert seen == []
    loop.train(make("train.epochs=1", "train.compile=model"), tmp_path / "b", progress=False)
    assert len(seen) == 1 and isinstance(seen[0], torch.nn.Module)
    loop.train(make("train.epochs=1", "train.compile=step"), tmp_path / "c", progress=False)
    assert len(seen) == 2 and not isinstance(seen[1], torch.nn.Module)


def test_small_convs_change_the_trained_weights():
    # 8 px: stage 3 of resnet20 ends at 2x2, where matmul takes the weight gradients of its convolutions
    wa = _weights_after_steps(make("data.image_size=8", "train.small_convs=native"), 2)
    wb = _weights_after_steps(make("data.image_size=8", "train.small_convs=matmul"), 2)
    assert not torch.equal(wa, wb)
    r = make("train.small_convs=matmul", "train.compile=model")  # the compiler is given torch's own convolutions
    assert not any(type(m).__name__ == "SmallConv2d" for m in setup.setup_model(r, 4, 3, CPU).modules())


def test_device_is_resolved_and_recorded(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="train.device"):
            derive.resolve_device("cuda")
    loop.train(make("train.epochs=1", "train.device=cpu"), tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "env.json").read_text())["device"] == "cpu"


def test_threads_are_set(tmp_path):
    before = torch.get_num_threads()
    try:
        loop.train(make("train.epochs=1", "train.threads=1"), tmp_path / "r", progress=False)
        assert json.loads((tmp_path / "r" / "env.json").read_text())["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_checkpoint_every_steps_and_keep(tmp_path):
    # 64 images / 16 = 4 steps per epoch, 4 epochs = 16 steps
    loop.train(make("train.checkpoint_every_steps=0", "train.keep_checkpoints=100"), tmp_path / "a", progress=False)
    loop.train(make("train.checkpoint_every_steps=3", "train.keep_checkpoints=100"), tmp_path / "b", progress=False)
    loop.train(make("train.checkpoint_every_steps=3", "train.keep_checkpoints=2"), tmp_path / "c", progress=False)
    steps = lambda d: [int(p.stem.split("-")[1]) for p in list_checkpoints(d)]  # noqa: E731
    assert steps(tmp_path / "a") == [4, 8, 12, 16]
    assert steps(tmp_path / "b") == [3, 4, 6, 8, 9, 12, 15, 16]
    assert steps(tmp_path / "c") == [15, 16]


def test_eval_every(tmp_path):
    loop.train(make("train.eval_every=2", "train.epochs=3"), tmp_path / "r", progress=False)
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert ["val_top1" in m for m in recs] == [False, True, True]


def test_evaluation_changes_no_trained_weight(tmp_path):
    """What the fmnist-fast ablation relies on: evaluating (every epoch, with TTA, with lookahead's
    weights) or not leaves training bit for bit the same."""
    from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
    extra = ("train.epochs=3", "tricks.lookahead_every=2", "tricks.mixup_alpha=0.2", "data.flip_mode=alternate")
    loop.train(make(*extra, "train.eval_every=1", "tricks.tta=flip"), tmp_path / "a", progress=False)
    loop.train(make(*extra, "train.eval_every=5"), tmp_path / "b", progress=False)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / n)[-1])["model"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len([m for m in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "val_tta_top1" in m]) == 3


def test_eval_batch_size_reaches_evaluation(tmp_path, monkeypatch):
    seen = []
    real = setup.bdata.eval_batches

    def spy(ds, batch_size, *a, **k):
        seen.append(batch_size)
        return real(ds, batch_size, *a, **k)

    monkeypatch.setattr(setup.bdata, "eval_batches", spy)
    loop.train(make("train.epochs=1"), tmp_path / "a", progress=False)
    loop.train(make("train.epochs=1", "train.eval_batch_size=5"), tmp_path / "b", progress=False)
    assert seen == [32, 5]


def test_log_every_steps_sets_the_readback_cadence(tmp_path, monkeypatch):
    """The loss is read back every train.log_every_steps steps; the progress bar shows the host-side lr
    and img/s from the first step and the loss from the first read-back."""
    calls, reads = [], []

    class Bar:
        disable = False

        def update(self, n): pass
        def set_postfix(self, **k): calls.append(k)
        def close(self): pass

    real = step.StepMeter.mean_loss
    monkeypatch.setattr(step.StepMeter, "mean_loss", lambda self: reads.append(1) or real(self))
    monkeypatch.setattr(loop, "progress_bar", lambda *a, **k: Bar())
    loop.train(make("train.epochs=1", "train.log_every_steps=1"), tmp_path / "a", progress=True)
    n1 = len(reads)
    calls.clear()
    reads.clear()
    loop.train(make("train.epochs=1", "train.log_every_steps=2"), tmp_path / "b", progress=True)
    assert (n1, len(reads)) == (4, 2)
    assert len(calls) == 4 and calls[0]["loss"] == "…" and calls[1]["loss"] != "…"
    assert all(float(c["lr"]) > 0 and float(c["img_s"]) > 0 for c in calls)


def test_max_bad_steps(tmp_path):
    for n in (1, 3):
        with pytest.raises(NonFiniteLoss, match=f"for {n} consecutive steps") as e:
            loop.train(make("optim.lr=1e30", f"train.max_bad_steps={n}"), tmp_path / f"r{n}", progress=False)
        assert "step" in str(e.value)


def test_resume_auto_continues_instead_of_refusing(tmp_path):
    r = make("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        loop.train(r, tmp_path / "r", progress=False, stop_after_steps=5)
    with pytest.raises(UsageError, match="--resume"):
        loop.train(r, tmp_path / "r", progress=False)
    final = loop.train(make("train.epochs=2", "train.resume=auto"), tmp_path / "r", progress=False)
    assert final["epoch"] == 2


def test_tta_is_reported_beside_the_plain_top1(tmp_path):
    loop.train(make("train.epochs=1"), tmp_path / "off", progress=False)
    loop.train(make("train.epochs=1", "tricks.tta=flip"), tmp_path / "on", progress=False)
    off = read_jsonl(tmp_path / "off" / "metrics.jsonl")[0]
    on = read_jsonl(tmp_path / "on" / "metrics.jsonl")[0]
    assert "val_tta_top1" not in off and {"val_tta_top1", "val_tta_top5"} <= set(on)
    assert on["val_top1"] == off["val_top1"]  # the plain number is unchanged by the extra views
    assert "(TTA flip: top-1" in (tmp_path / "on" / "run.log").read_text()


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_tta_shifts_bring_in_what_the_training_crops_padded_with(monkeypatch, pad_mode):
    """data.pad_mode is read by the run's evaluation too: flip_shift's shifted views are filled black (zeros) or
    mirrored (reflect), as the training crops were."""
    from bagoftricks import tricks

    seen, real = [], tricks.tta_views
    monkeypatch.setattr(tricks, "tta_views", lambda x, mode, border=0.0: seen.append(border) or real(x, mode, border))
    t = setup.setup_training(make("tricks.tta=flip_shift", "data.augment=small", f"data.pad_mode={pad_mode}"), CPU,
                             DistInfo())
    ev = t.evaluate()
    tf = t.data.eval_transform
    want = "reflect" if pad_mode == "reflect" else tuple(-m / s for m, s in zip(tf.mean, tf.std))
    assert seen and set(seen) == {want} and "val_tta_top1" in ev


def test_head_lr_mult_scales_the_heads_lr_in_the_step():
    t = setup.setup_training(make("optim.head_lr_mult=10"), CPU, DistInfo())
    lr = t.step.set_lr(0, 3)
    by_name = {g["name"]: g for g in t.optimizer.param_groups}
    head = {id(p) for p in t.model.fc.parameters()}
    assert {id(p) for p in by_name["head_decay"]["params"]} == head
    assert by_name["head_decay"]["lr"] == pytest.approx(10 * lr) and by_name["decay"]["lr"] == pytest.approx(lr)


def test_freeze_keeps_frozen_bn_in_eval_mode_and_weights_fixed():
    t = setup.setup_training(make("model.freeze=layer1", "optim.lr=0.5"), CPU, DistInfo())
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    for s in range(2):
        x, y = next(iter(t.data.train.epoch(0)))
        t.step((x, y), 0, s)
    after = t.model.state_dict()
    frozen = [k for k in after if k.startswith(("conv1", "bn1", "layer1."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # running stats included
    assert not torch.equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])
    assert not t.model.layer1[0].bn1.training and t.model.layer2[0].bn1.training
