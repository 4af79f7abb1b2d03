"""The optimizers a recipe names (optim.name), built from kept implementations.

    sgd     torch.optim.SGD, Nesterov momentum (§2), fused where torch has the kernel (CPU and CUDA)
    adamw   torch.optim.AdamW (Loshchilov & Hutter 2019), fused where torch has the kernel
    lars    timm.optim.Lars (You et al. 2017): SGD whose step per layer is scaled by the trust ratio
            η·‖w‖/‖g + λw‖; with no-bias-decay, BN and biases (weight decay 0) are not adapted
    lamb    timm.optim.Lamb (You et al. 2020): Adam's step scaled per layer by ‖w‖/‖update‖
    muon    timm.optim.Muon (Jordan et al. 2024) for the conv filters (muon_takes=hidden: all but the
            first convolution's), each update orthogonalised by Newton–Schulz iterations (conv filters
            flattened to out x in·k·k); everything else (BN, biases, the head) goes to a second
            optimizer, SGD or AdamW, as airbench's Muon record runs it. The two are one `OptimizerChain`.

Why these implementations: torch.optim.Muon takes 2-D parameters only, and timm's Muon flattens conv
filters itself (and its own AdamW fallback cannot be SGD), so the filters go to timm's Muon and the
rest to a torch optimizer of the recipe's choice. A chain is what the rest of the engine sees as one
optimizer: its param_groups are its children's (the step sets their lr), its state_dict holds each
child's, and the guarded step (guarded_step.py) skips each child its own way.

Nothing here reads the recipe: the engine passes plain values.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

TIMM_HINT = "pip install 'bagoftricks[timm]' (LARS, LAMB and Muon are timm.optim's)"


def _timm_optim():
    try:
        import timm.optim
    except ImportError as e:
        raise ImportError(f"optim.name: needs timm: {TIMM_HINT}") from e
    return timm.optim


class OptimizerChain:
    """Several optimizers stepped as one: each over its own parameters."""

    def __init__(self, children: list[torch.optim.Optimizer]):
        self.children = children

    @property
    def param_groups(self) -> list[dict]:
        return [g for c in self.children for g in c.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for c in self.children for p, s in c.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for c in self.children:
            c.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None) -> None:
        for c in self.children:
            c.step()

    def state_dict(self) -> dict:
        return {"chain": [c.state_dict() for c in self.children]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("chain", [])) != len(self.children):
            raise ValueError(f"optimizer state for {len(state.get('chain', []))} optimizers, this chain has "
                             f"{len(self.children)}")
        for c, s in zip(self.children, state["chain"]):
            c.load_state_dict(s)

    def __repr__(self) -> str:
        return "OptimizerChain(" + ", ".join(type(c).__name__ for c in self.children) + ")"


def children(optimizer: Any) -> list:
    """The optimizers that step: a chain's children, or the optimizer itself."""
    return list(optimizer.children) if isinstance(optimizer, OptimizerChain) else [optimizer]


def _try_fused(cls, groups, **kw) -> torch.optim.Optimizer:
    """`cls` with its fused kernel when this torch has it for the parameters' device, else its default."""
    try:
        return cls([dict(g) for g in groups], fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # the optimizer fills in the group dicts it is given: fresh ones
        return cls([dict(g) for g in groups], **kw)


def muon_params(model: nn.Module, takes: str) -> set[int]:
    """The ids of the parameters Muon updates: every conv filter (takes="filters", as airbench), or every one but
    the first convolution's (takes="hidden": the input layer, whose input is the image, goes to the fallback, as
    Muon's authors advise for a network's first and last layers)."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if takes == "hidden":
        convs = convs[1:]
    return {id(m.weight) for m in convs if m.weight is not None and m.weight.ndim >= 3}


def split_for_muon(model: nn.Module, groups: list[dict], takes: str) -> tuple[list[dict], list[dict]]:
    """Each param group split in two: the parameters Muon takes, and the others (the fallback's)."""
    mine = muon_params(model, takes)
    muon = [dict(g, params=[p for p in g["params"] if id(p) in mine]) for g in groups]
    rest = [dict(g, params=[p for p in g["params"] if id(p) not in mine]) for g in groups]
    return [g for g in muon if g["params"]], [g for g in rest if g["params"]]


def build_optimizer(name: str, groups: list[dict], *, lr: float, weight_decay: float, momentum: float = 0.9,
                    nesterov: bool = True, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    trust_coefficient: float = 0.001, model: nn.Module | None = None,
                    muon_momentum: float = 0.95, ns_steps: int = 5, muon_takes: str = "filters",
                    fallback: str = "sgd", fallback_lr_mult: float = 1.0):
    """The optimizer `name` over param groups (each group may carry its own weight_decay and lr_mult);
    `lr` is the starting lr of every group (the training step sets each step's)."""
    kw = dict(lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return prepare_state(_try_fused(torch.optim.SGD, groups, momentum=momentum, nesterov=nesterov, **kw))
    if name == "adamw":
        return _try_fused(torch.optim.AdamW, groups, betas=tuple(betas), eps=eps, **kw)
    if name == "lars":
        return _timm_optim().Lars([dict(g) for g in groups], momentum=momentum, nesterov=nesterov, eps=eps,
                                  trust_coeff=trust_coefficient, **kw)
    if name == "lamb":
        return _timm_optim().Lamb([dict(g) for g in groups], betas=tuple(betas), eps=eps, **kw)
    if name == "muon":
        if model is None:
            raise ValueError("muon needs the model, to choose the parameters it takes")
        filters, rest = split_for_muon(model, groups, muon_takes)
        if not filters:
            raise ValueError(f"muon: the model has no conv filter for Muon to take (muon_takes: {muon_takes})")
        mine = [dict(g, use_muon=True) for g in filters]
        first = _timm_optim().Muon(mine, momentum=muon_momentum, nesterov=nesterov, ns_steps=ns_steps,
                                   adjust_lr_fn="original", **kw)
        if not rest:
            return first
        rest = [dict(g, lr_mult=g.get("lr_mult", 1.0) * fallback_lr_mult) for g in rest]
        second = build_optimizer(fallback, rest, lr=lr * fallback_lr_mult, weight_decay=weight_decay,
                                 momentum=momentum, nesterov=nesterov, betas=betas, eps=eps)
        return OptimizerChain([first, second])
    raise ValueError(f"optim.name: unknown optimizer {name!r}")


def prepare_state(optimizer: Any) -> Any:
    """SGD's momentum buffers created as zeros before the first step.

    With dampening 0 the first update is then ``buf = 0·momentum + g = g``, exactly what SGD does when it
    creates the buffer itself. Needed for a device-side skip: a fused kernel told to skip the very first
    step would otherwise leave a freshly allocated, uninitialised buffer behind. Only SGD: every other
    optimizer sets up its state itself when the state is empty (RMSprop, Adam, ...), and a buffer put
    there first would stop it from doing so.
    """
    for opt in children(optimizer):
        if not isinstance(opt, torch.optim.SGD):
            continue
        for group in opt.param_groups:
            if group.get("momentum", 0) and not group.get("dampening", 0):
                for p in group["params"]:
                    state = opt.state[p]
                    if state.get("momentum_buffer") is None:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def describe_optimizer(optimizer: Any) -> str:
    """For the run log: which optimizers, how many tensors each, fused or not."""
    parts = []
    for opt in children(optimizer):
        n = sum(len(g["params"]) for g in opt.param_groups)
        fused = all(g.get("fused") for g in opt.param_groups)
        parts.append(f"{type(opt).__name__} ({n} tensors{', fused' if fused else ''})")
    return " + ".join(parts)


def optimizer_tensors(optimizer: Any) -> Iterator[torch.Tensor]:
    """Every tensor of the optimizers' state (momentum buffers, moments, step counts)."""
    for opt in children(optimizer):
        for s in opt.state.values():
            yield from (t for t in s.values() if isinstance(t, torch.Tensor))
