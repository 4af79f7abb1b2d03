"""Zero γ over training: the last-BN γ and the residual branch weight norms, with the trick on and off.

    python benchmarks/zero_gamma.py --recipe recipes/fmnist/04-no-bias-decay.yaml --every 50 \
        --set data.train_limit=16000 --set model.width=8 --out runs/zero-gamma

Trains the recipe twice with the same seed, `tricks.zero_gamma` true and false (everything else equal),
keeping a checkpoint every `--every` steps, then reads every checkpoint back and records, per residual
block, the mean |γ| of its last BN (the layer zero γ sets to 0, §3.1) and the L2 norm of its branch's conv
weights (the shortcut excluded). Writes OUT/zero_gamma.json (one record per checkpoint and setting, plus
the initial model) and OUT/zero_gamma.png (both quantities, mean over blocks, against the step). Run
folders already finished are reused, so the command can be re-run to redraw.

This is the evidence for the "slow start" reading of zero γ: with γ = 0 the branches start silent and
their γ must grow before the blocks contribute; how fast they do, against the branch weights the weight
decay shrinks meanwhile, is what the figure shows.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn

from bagoftricks import recipe as brecipe
from bagoftricks.engine import setup, train
from bagoftricks.checkpoint import list_checkpoints, load_checkpoint
from bagoftricks.files import atomic_write_text
from bagoftricks.models.analysis import residual_last_bns

STEP = re.compile(r"step-(\d+)\.pt$")


def block_stats(model: nn.Module) -> dict:
    """Per residual block: mean |γ| of its last BN and the L2 norm of its branch's conv weights."""
    gammas, norms = [], []
    for block in (m for m in model.modules() if isinstance(getattr(m, "last_bn", None), nn.BatchNorm2d)):
        gammas.append(float(block.last_bn.weight.detach().abs().mean()))
        shortcut = getattr(block, "downsample", None)
        skip = {id(p) for p in shortcut.parameters()} if shortcut is not None else set()
        sq = sum(float(m.weight.detach().double().pow(2).sum()) for m in block.modules()
                 if isinstance(m, nn.Conv2d) and id(m.weight) not in skip)
        norms.append(sq**0.5)
    if len(gammas) != len(residual_last_bns(model)):
        raise ValueError("zero_gamma: the model's residual blocks do not all expose last_bn")
    return {"gamma_abs_mean": gammas, "branch_weight_norm": norms}


def _summary(step: int, stats: dict) -> dict:
    g, w = stats["gamma_abs_mean"], stats["branch_weight_norm"]
    return {"step": step, "gamma_mean": sum(g) / len(g), "branch_norm_mean": sum(w) / len(w), **stats}


def trajectory(run_dir: Path) -> list[dict]:
    """The initial model (step 0) and every checkpoint of a finished run, in step order."""
    r = brecipe.load(run_dir / "recipe.yaml")
    first = load_checkpoint(list_checkpoints(run_dir)[0])
    in_ch, classes = _shape(first["model"])
    model = setup.setup_model(r, classes, in_ch, torch.device("cpu"))
    out = [_summary(0, block_stats(model))]
    for path in list_checkpoints(run_dir):
        model.load_state_dict(load_checkpoint(path)["model"])
        out.append(_summary(int(STEP.search(path.name).group(1)), block_stats(model)))
    return out


def _shape(state: dict) -> tuple[int, int]:
    """(input channels, classes) from a model state dict: the first conv's and the last linear's shapes."""
    convs = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    fcs = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(convs[0].shape[1]), int(fcs[-1].shape[0])


def run_pair(r: brecipe.Recipe, out: Path, every: int) -> dict[str, list[dict]]:
    """Train r with zero γ on and off (checkpoint every `every` steps, all kept) and read their trajectories."""
    result = {}
    for name, on in (("zero_gamma_on", True), ("zero_gamma_off", False)):
        run = brecipe.validate(brecipe.apply_overrides(r, [
            f"tricks.zero_gamma={str(on).lower()}", f"train.checkpoint_every_steps={every}",
            "train.keep_checkpoints=100000"]))
        d = out / name
        if not (d / "final.json").is_file():
            train(run, d, progress=False)
        result[name] = trajectory(d)
    return result


def figure(result: dict[str, list[dict]], path: Path) -> Path:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9.0, 3.6))
    ax_g, ax_w = fig.subplots(1, 2)
    for name, recs in result.items():
        steps = [x["step"] for x in recs]
        label = name.replace("_", " ").replace("gamma", "γ")
        ax_g.plot(steps, [x["gamma_mean"] for x in recs], marker=".", label=label)
        ax_w.plot(steps, [x["branch_norm_mean"] for x in recs], marker=".", label=label)
    ax_g.set(xlabel="step", ylabel="last-BN |γ|, mean over blocks", title="last BN of each residual branch")
    ax_w.set(xlabel="step", ylabel="branch conv weight L2 norm, mean over blocks", title="residual branch weights")
    for ax in (ax_g, ax_w):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--every", type=int, default=50, help="checkpoint (and record) every N steps")
    p.add_argument("--out", default="runs/zero-gamma")
    a = p.parse_args(argv)
    if a.every < 1:
        p.error(f"--every must be >= 1, got {a.every}")
    r = brecipe.apply_overrides(brecipe.load(a.recipe), a.overrides)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_pair(r, out, a.every)
    atomic_write_text(out / "zero_gamma.json", json.dumps(result, indent=1) + "\n")
    figure(result, out / "zero_gamma.png")
    for name, recs in result.items():
        shown = (recs[0], recs[len(recs) // 2], recs[-1])
        print(f"{name}: " + ", ".join(f"step {x['step']}: |γ| {x['gamma_mean']:.3f}, branch norm "
                                      f"{x['branch_norm_mean']:.2f}" for x in shown))
    print(f"wrote {out / 'zero_gamma.json'} and {out / 'zero_gamma.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
