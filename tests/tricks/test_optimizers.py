"""optim.name: every optimizer trains, resumes bit for bit, skips a bad step without touching weights or
state, reads only its own fields, and composes with the rest of the step."""
import pytest
import torch
import torch.nn as nn

from bagoftricks import recipe
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.engine import train
from bagoftricks.engine.setup import make_optimizer, setup_training
from bagoftricks.errors import RecipeError, TrainingInterrupted
from bagoftricks.tricks import guarded_step, optimizers
from tests.engine.conftest import tiny

NAMES = ("sgd", "adamw", "lars", "lamb", "muon")
LR = {"sgd": 0.1, "adamw": 0.003, "lars": 0.5, "lamb": 0.01, "muon": 0.05}


def opt_recipe(name, *extra):
    return tiny("train.epochs=2", f"optim.name={name}", f"optim.lr={LR[name]}", "tricks.no_bias_decay=true", *extra)


@pytest.mark.parametrize("name", NAMES)
def test_each_optimizer_trains_and_resumes_bitwise(tmp_path, name):
    r = opt_recipe(name)
    final = train(r, tmp_path / "full", progress=False)
    assert final["train_loss"] == final["train_loss"]  # finite: a NaN would have stopped the run
    with pytest.raises(TrainingInterrupted):
        train(r, tmp_path / "part", progress=False, stop_after_steps=3)  # inside epoch 1 (4 steps)
    train(r, tmp_path / "part", resume=True, progress=False)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / d)[-1]) for d in ("full", "part"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "optimizer: " in (tmp_path / "full" / "run.log").read_text()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _build(name, model):
    groups = [{"params": list(model.parameters()), "weight_decay": 1e-4}]
    return optimizers.build_optimizer(name, groups, lr=LR[name], weight_decay=1e-4, model=model)


def _step(model, opt, scale=1.0):
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = model(x).square().mean() * scale
    opt.zero_grad(set_to_none=True)
    return guarded_step.step_with_scaler(guarded_step.loss_scaler(False, "cpu"), opt, loss)


def _snapshot(model, opt):  # the weights and the optimizer's state (BN statistics move in any forward pass)
    return [p.detach().clone() for p in model.parameters()] + [t.clone() for t in optimizers.optimizer_tensors(opt)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["host", "mask"])
def test_a_bad_step_leaves_weights_and_state_untouched(name, mode, monkeypatch):
    model = _model()
    opt = _build(name, model)
    _step(model, opt)  # the state exists now (momentum, moments)
    if mode == "mask":  # as on an accelerator: the update undone on the device where the flag is set
        monkeypatch.setattr(guarded_step, "skip_mode",
                            lambda o, d: "flag" if guarded_step.skips_on_device(o) else "mask")
    before = _snapshot(model, opt)
    assert bool(_step(model, opt, scale=float("inf")))
    after = _snapshot(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not bool(_step(model, opt))  # and a good step still steps
    assert not all(torch.equal(a, b) for a, b in zip(after, _snapshot(model, opt)))


def test_fused_adamw_skips_on_the_device_from_its_first_step():
    model = _model()
    opt = _build("adamw", model)
    assert guarded_step.skip_mode(opt, torch.device("cpu")) == "flag"
    before = [p.clone() for p in model.parameters()]
    assert bool(_step(model, opt, scale=float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_muon_takes_the_filters_and_the_fallback_the_rest():
    model = _model()
    chain = _build("muon", model)
    assert isinstance(chain, optimizers.OptimizerChain)
    muon, sgd = chain.children
    conv_weights = {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for g in muon.param_groups for p in g["params"]} == conv_weights
    assert type(sgd).__name__ == "SGD" and len(sgd.param_groups[0]["params"]) == 6  # 2 conv biases, BN γ β, head
    hidden = optimizers.build_optimizer("muon", [{"params": list(model.parameters())}], lr=0.05,
                                        weight_decay=0.0, model=model, muon_takes="hidden")
    assert {id(p) for g in hidden.children[0].param_groups for p in g["params"]} == {id(model[3].weight)}


def test_prepare_state_leaves_optimizers_that_set_up_their_own_alone():
    p = nn.Parameter(torch.randn(3))
    rms = optimizers.prepare_state(torch.optim.RMSprop([p], lr=0.1, momentum=0.9))
    p.grad = torch.ones(3)
    rms.step()  # a momentum_buffer put there first made RMSprop fail with KeyError: 'square_avg'
    assert "square_avg" in rms.state[p]


@pytest.mark.parametrize("name, field, value", [("adamw", "momentum", 0.95), ("sgd", "betas", "[0.8, 0.9]"),
                                                ("lamb", "trust_coefficient", 0.01), ("sgd", "ns_steps", 3),
                                                ("muon", "eps", 1e-6), ("lars", "fallback", "adamw")])
def test_a_field_the_optimizer_does_not_read_is_refused(name, field, value):
    with pytest.raises(RecipeError, match=rf"optim.{field}: {name} does not read this field"):
        recipe.validate(recipe.apply_overrides(recipe.Recipe(), [f"optim.name={name}", f"optim.{field}={value}"]))
    # muon reads its fallback's fields: AdamW's eps with the adamw fallback
    recipe.validate(recipe.apply_overrides(recipe.Recipe(), ["optim.name=muon", "optim.fallback=adamw",
                                                             "optim.eps=1e-6"]))


def test_the_chain_checkpoints_every_child_and_steps_under_the_fp16_scaler():
    t = setup_training(opt_recipe("muon"), torch.device("cpu"))
    state = t.optimizer.state_dict()
    assert len(state["chain"]) == 2
    other = make_optimizer(t.recipe, t.model, 0.1)
    other.load_state_dict(state)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    model = _model()
    chain = _build("muon", model)
    x = torch.randn(4, 3, 8, 8)
    for scale in (1.0, float("inf")):
        chain.zero_grad()
        before = [p.clone() for p in model.parameters()]
        bad = guarded_step.step_with_scaler(scaler, chain, model(x).square().mean() * scale)
        moved = not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert moved != bool(bad)
