"""Recipe -> values: what the rest of the engine (and bench, deploy, report, transfer) computes from a recipe.

A leaf of the engine: nothing here imports another engine module, so every module of the engine and
every command above it can use these without pulling in the loop. Pure functions of the recipe (and
of a device or a checkpoint), no state.

    resolve_device, autocast, precision_note,
    native_precision, resolve_precision,
    precision_line                                train.device / train.precision
    eval_batch_size, eval_crop_ratio,
    normalisation, eval_transform                 how evaluation frames and normalises an image
    recipe_model, model_from_checkpoint           the zoo's model for a recipe, or for a checkpoint
    run_steps, run_epochs, epoch_steps,
    planned_steps, planned_epochs, check_length,
    length_problem                                the run's length (train.epochs, or train.steps)
    schedule_position                             where a step lies on the schedule (a budget's re-sizes)
    base_lr, scheduled_lr                         the lr of every step (§3.1 linear scaling, warmup, §5.1)
"""
from __future__ import annotations

import bisect
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import tricks
from bagoftricks.checkpoint import read_checkpoint
from bagoftricks.errors import RecipeError, UsageError
from bagoftricks.recipe import Recipe, from_dict, length_in_epochs, validate

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # recipe.PRECISIONS; fp32: no autocast

# The statistics a transfer dataset's images are normalised with: its classification source's
TRANSFER_STATS = {"fmnist_scenes": "fashion_mnist", "voc": "imagefolder", "ade20k": "imagefolder",
                  "coco": "imagefolder"}


# -------------------------------------------------------------------------------- device, precision
def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """train.device as a torch.device; under torchrun, "cuda" is this process's local GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"train.device: '{spec}' requested but CUDA is not available")
        if spec == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(spec)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to train.precision (fp16/bf16) on `device`; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def native_precision(device: torch.device) -> str:
    """What train.precision "auto" trains in on `device`: bf16 where it is computed natively (a CPU with AVX-512
    BF16 or AMX, a GPU that reports bf16 support), else fp32 on a CPU (emulated bf16 runs several times slower)
    and fp16 on a GPU; fp32 on any other device."""
    if device.type == "cpu":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_precision(r: Recipe, device: torch.device) -> Recipe:
    """`r` with train.precision "auto" replaced by what it trains in on `device` (other recipes unchanged)."""
    if r.train.precision != "auto":
        return r
    return replace(r, train=replace(r.train, precision=native_precision(device)))


def precision_line(precision: str, device: torch.device) -> str:
    """The run log's line about what train.precision "auto" chose."""
    if device.type == "cpu":
        why = ("the CPU computes bf16 natively (AVX-512 BF16 or AMX)" if precision == "bf16" else
               f"the CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}, no AVX-512 BF16 or AMX): "
               "emulated bf16 would run several times slower")
    elif device.type == "cuda":
        why = "the GPU computes bf16" if precision == "bf16" else "the GPU has no bf16: fp16 with a dynamic loss scale"
    else:
        why = f"no mixed precision is chosen on {device.type}"
    return f"train.precision auto: {precision} on {device}: {why}; recipe.yaml records {precision}"


def precision_note(precision: str, device: torch.device) -> str:
    """A warning when autocast would be emulated on a CPU, several times slower than fp32: fp16 (a GPU's
    precision) anywhere, bf16 without AVX-512 BF16 or AMX; '' otherwise."""
    if device.type != "cpu" or precision not in ("fp16", "bf16"):
        return ""
    if precision == "fp16":
        return ("train.precision: fp16 autocast is emulated on a CPU (measured several times slower than fp32); it "
                "is meant for GPUs: train.precision auto trains in bf16 where the CPU computes it natively, else fp32")
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ""
    return (f"train.precision: bf16 is emulated on this CPU ({torch.backends.cpu.get_cpu_capability()}, no "
            "AVX-512 BF16 or AMX) and runs several times slower than fp32; --set train.precision=fp32 (or auto) "
            "trains faster")


# ------------------------------------------------------------------------------------- evaluation
def eval_batch_size(r: Recipe) -> int:
    """train.eval_batch_size, or twice the training batch (no activations are kept for backward)."""
    return r.train.eval_batch_size or 2 * r.train.batch_size


def eval_crop_ratio(r: Recipe) -> float:
    """data.crop_ratio with the §2 augmentation; 1.0 (the whole image) with "small" and "none".

    The evaluation must frame an image as training did: the random-resized crop of §2 trains on
    crops that enlarge the object (hence the 0.875 centre crop), while pad-and-crop and "none" train
    on the whole image, so centre-cropping at evaluation would enlarge every test image by 1/0.875
    (measured in benchmarks/README.md: "ResNet-18-D at 32 px").
    """
    return r.data.crop_ratio if r.data.augment == "paper" else 1.0


def normalisation(r: Recipe, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) the recipe's images are normalised with, on the 0..255 scale.

    The dataset's own statistics (a transfer dataset: those of its source, TRANSFER_STATS) adapted to
    the model's channels by one rule, `data.dataset_stats`'s: RGB statistics averaged for one channel,
    one channel's repeated for several.
    """
    return bdata.dataset_stats(TRANSFER_STATS.get(r.data.name, r.data.name), in_channels)


def eval_transform(r: Recipe, in_channels: int):
    """The recipe's evaluation transform: uint8 [B, C, H, W] -> resized (and centre-cropped with the §2
    augmentation), normalised float."""
    mean, std = normalisation(r, in_channels)
    return bdata.EvalTransform(r.data.image_size, crop_ratio=eval_crop_ratio(r), mean=mean, std=std)


def tta_border(r: Recipe, transform) -> tricks.Border:
    """What test-time shifts (tricks.tta flip_shift) bring in at the edge of images framed by `transform` (an
    EvalTransform): what the recipe's training crops padded with (data.pad_mode)."""
    return tricks.tta_border(r.data.pad_mode, transform.mean, transform.std)


# --------------------------------------------------------------------------------------------- model
def recipe_model(r: Recipe, num_classes: int, in_channels: int) -> nn.Module:
    """The zoo's model for the recipe's model section (weights as the zoo initialises them)."""
    m = r.model
    try:
        return bmodels.build_model(m.arch, num_classes, in_channels, variant=m.variant, width=m.width, init=m.init,
                                   activation=m.activation, se_reduction=m.se_reduction, groups=m.groups,
                                   width_per_group=m.width_per_group, drop_path=m.drop_path,
                                   width_mult=m.width_mult, stem=m.stem, bn_eps=m.bn_eps, bn_momentum=m.bn_momentum,
                                   dirac=m.dirac, stem_bias=m.stem_bias_epochs > 0)
    except ValueError as e:  # an option the architecture lacks, or widths that do not fit: bad input
        raise RecipeError(f"model: {e}") from None


class CheckpointModel(NamedTuple):
    """A model rebuilt from a checkpoint (`model_from_checkpoint`)."""
    model: nn.Module     # the zoo's model of the checkpoint's recipe, with the chosen weights, on the CPU
    recipe: Recipe       # the recipe it was trained with
    state: dict          # the whole checkpoint (classes, num_classes, in_channels, task, ...)
    path: Path           # the checkpoint file
    which: str           # "EMA weights of step-N.pt" / "raw weights of ...", for a log line

    @property
    def in_channels(self) -> int:
        return int(self.state.get("in_channels", 3))

    @property
    def classes(self) -> list[str]:
        """The class names, index = logit (the class indices as names when the run recorded none)."""
        return list(self.state.get("classes") or []) or [str(k) for k in range(int(self.state["num_classes"]))]


def model_from_checkpoint(path: str | Path, ema: bool | None = False) -> CheckpointModel:
    """The classifier of a checkpoint file or run folder (its newest valid checkpoint), built from the
    checkpoint's own recipe with its weights; `ema` chooses them as `checkpoint.read_checkpoint` does
    (False: raw, the default; True: EMA or an error; None: EMA when the run kept them).

    Evaluation, export and predict read the raw weights unless asked; a distillation teacher reads
    ema=None. The model is on the CPU in training mode, as `load_state_dict` leaves it.
    """
    ck = read_checkpoint(path, ema)
    r = from_dict(ck.state["recipe"])
    model = recipe_model(r, int(ck.state["num_classes"]), int(ck.state.get("in_channels", 3)))
    model.load_state_dict(ck.weights)
    return CheckpointModel(model, r, ck.state, ck.path, ck.which)


# ------------------------------------------------------------------------------------------------ lr
def base_lr(r: Recipe, world_size: int) -> float:
    """optim.lr, or optim.lr per 256 images scaled to the global batch (§3.1)."""
    if r.tricks.linear_scaling:
        return tricks.scaled_lr(r.optim.lr, r.train.batch_size * world_size)
    return r.optim.lr


def run_steps(r: Recipe, steps_per_epoch: int) -> int:
    """The run's length in optimizer steps: train.steps, or train.epochs whole epochs."""
    return r.train.steps if r.train.steps > 0 else r.train.epochs * steps_per_epoch


def run_epochs(r: Recipe, steps_per_epoch: int) -> int:
    """The epochs the run starts: train.epochs, or as many as train.steps needs (the last may be partial)."""
    return -(-run_steps(r, steps_per_epoch) // steps_per_epoch)


def epoch_steps(r: Recipe, epoch: int, steps_per_epoch: int) -> int:
    """How many steps epoch `epoch` (0-based) trains: all of them but in the partial last epoch of a length in steps."""
    return max(0, min(steps_per_epoch, run_steps(r, steps_per_epoch) - epoch * steps_per_epoch))


def planned_steps(r: Recipe, epoch: int, steps_per_epoch: int) -> int:
    """The length, in steps, of the run that epoch `epoch` (0-based) was trained for: the run's own or, in a run
    extended from shorter ones (schedule.extended_from), the shorter run's until it ended, or in a run its budget
    re-sized (train.resized_at), the length it had when the epoch started."""
    ext = next((e for e in r.schedule.extended_from if epoch < e), None)
    if ext is not None:
        return ext * steps_per_epoch
    i = bisect.bisect_right(r.train.resized_at, epoch * steps_per_epoch)  # re-sizes at or before the epoch's start
    return r.train.resized_from[i] if i < len(r.train.resized_at) else run_steps(r, steps_per_epoch)


def schedule_position(r: Recipe, step: int, steps_per_epoch: int) -> tuple[float, int]:
    """(position, length): where global step `step` lies on the schedule of a run of `length` steps (the lr's, the
    lookahead ramp's). The step itself on the planned length; in a run its budget re-sized (train.resized_at after
    step k, from train.resized_from), the steps from k on are spread evenly over what was left of the schedule, so
    that the run's last step is the schedule's last: the first length's schedule, stretched or squeezed after each
    re-size, continuous at each (the steps before k are where they were). The warmup is not stretched: its steps
    are the recipe's (tricks.warmup_epochs of the data, as the length it was sized to has them), and a re-size within
    it spreads the schedule's rest from the warmup's end on."""
    at = r.train.resized_at
    if not at or step < at[0]:
        return step, planned_steps(r, step // steps_per_epoch, steps_per_epoch)
    first, ends = r.train.resized_from[0], (*r.train.resized_from[1:], r.train.steps)
    warm = tricks.warmup_steps(r.tricks.warmup_epochs, steps_per_epoch)
    if step < warm:  # a re-size within the warmup: its ramp goes on as it was
        return step, first
    at = tuple(max(k, warm) for k in at)  # ... and the rest is spread from its end on
    pos = float(at[0])
    for i, k in enumerate(at):
        if i + 1 < len(at) and at[i + 1] == k:  # re-sized again within the warmup: the later length holds from its end
            continue
        if ends[i] - 1 <= k:  # re-sized to end at this step: the schedule's last (a later re-size cannot follow)
            return first - 1, first
        rate = (first - 1 - pos) / (ends[i] - 1 - k)  # schedule steps per run step from k to the new end
        if i + 1 == len(at) or step < at[i + 1]:
            return pos + (step - k) * rate, first
        pos += (at[i + 1] - k) * rate
    raise AssertionError("unreachable")


def planned_epochs(r: Recipe, epoch: int, steps_per_epoch: int) -> int:
    """planned_steps in epochs, the last one counted when partial (what tricks.mix_off_epochs counts back from)."""
    return -(-planned_steps(r, epoch, steps_per_epoch) // steps_per_epoch)


def length_problem(r: Recipe, steps_per_epoch: int) -> str:
    """What breaks the rules between the run's length and its other fields (warmup, progressive sizes, mix-off
    epochs) for a length in steps, once the data gives the steps per epoch; '' when nothing does (a length in epochs
    was checked with the recipe)."""
    if length_in_epochs(r.train):
        return ""
    as_epochs = replace(r, train=replace(r.train, epochs=run_epochs(r, steps_per_epoch), steps=0, budget="",
                                         resized_at=(), resized_from=()))
    try:
        validate(as_epochs)
    except RecipeError as e:
        return str(e)
    n, warm = run_steps(r, steps_per_epoch), tricks.warmup_steps(r.tricks.warmup_epochs, steps_per_epoch)
    if warm >= n:  # the epochs above count a partial last one whole: 66 steps passed a 0.5-epoch (234-step) warmup
        return (f"tricks.warmup_epochs: {r.tricks.warmup_epochs:g} epoch(s) are {warm} steps here, not fewer than the "
                f"run's {n}: it would end before its lr ramp does")
    return ""


def check_length(r: Recipe, steps_per_epoch: int) -> None:
    """`length_problem` as a RecipeError naming train.steps."""
    problem = length_problem(r, steps_per_epoch)
    if problem:
        raise RecipeError(f"train.steps: {r.train.steps} steps are {run_epochs(r, steps_per_epoch)} epoch(s) of "
                          f"{steps_per_epoch} steps on this data, and then {problem}")


def scheduled_lr(r: Recipe, step: int, steps_per_epoch: int, world_size: int = 1) -> float:
    """The learning rate of global step `step`: warmup, then the recipe's schedule over the planned length
    (recomputed where an extended run went on past a shorter one's end; where a budget re-sized the run, at the
    step's `schedule_position`)."""
    s = r.schedule
    at, total = schedule_position(r, step, steps_per_epoch)
    return tricks.lr_at(at, base_lr=base_lr(r, world_size), steps_per_epoch=steps_per_epoch, total_steps=total,
                        warmup_epochs=r.tricks.warmup_epochs, kind=s.kind, milestones=tuple(s.milestones),
                        gamma=s.gamma, floor=s.floor)
