"""The recipe: one typed, frozen description of a training run.

``Recipe()`` is the paper's §2 baseline (ResNet-50-A, ImageNet pipeline, NAG, step schedule, 120
epochs). Every trick is a field, off by default, whose comment gives the unit and the paper's value.
Only the engine reads the trick fields; everything else receives plain arguments.

Recipes load from YAML (partial files are fine: missing keys keep their defaults), take
``section.field=value`` overrides typed by the field, and are validated as a whole before anything
is written to disk. Unknown keys are errors that suggest the closest valid names.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import re
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from bagoftricks.data.catalog import AUGMENTS, DATASETS, DECODES, FLIP_MODES, PAD_MODES, TRANSFER_DATASETS
from bagoftricks.errors import RecipeError
from bagoftricks.models.catalog import (ACTIVATIONS, FREEZE_POINTS, INITS, STEMS, VARIANTS, list_models, model_spec,
                                         split_variant)
from bagoftricks.tricks.catalog import (LABEL_SMOOTHING_FORMS, MUON_FALLBACKS, MUON_TAKES, OPTIMIZERS,
                                        RANDAUGMENT_BINS, TTA_MODES, optim_fields)
from bagoftricks.tricks.schedule import KINDS as SCHEDULE_KINDS


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet50"          # preset: resnet18..152, resnet20..110 (28-32 px), mobilenet_v1, inception_v3, ...
    variant: str = "A"              # ResNet tweak of §4: A (original) | B | C | D
    width: int = 0                  # base width in channels; 0 = the arch's own (64 ImageNet family, 16 small family)
    init: str = "xavier"            # xavier (paper §2) | kaiming
    activation: str = "relu"        # relu | silu (swish) | gelu | leaky_relu | hardswish | mish
    se_reduction: int = 0           # squeeze-and-excitation reduction r; 0 = off; SENet: 16
    groups: int = 1                 # ResNeXt cardinality; 1 = plain ResNet; ResNeXt-50: 32
    width_per_group: int = 0        # ResNeXt width per group; 0 = plain ResNet width; ResNeXt-50: 4
    drop_path: float = 0.0          # stochastic depth: max per-block drop probability in [0, 1)
    width_mult: float = 1.0         # MobileNet width multiplier in (0, 1]
    sync_bn: bool = False           # SyncBatchNorm across ranks under torchrun
    pretrained: str = ""            # initial weights: a run folder/checkpoint (EMA when kept), a torchvision/timm
    #                                 state dict (.pth/.pt/.bin/.safetensors) or a model folder (local-dir:DIR,
    #                                 hf-hub:ORG/NAME[@REV]); a head of another shape is re-initialised, an input
    #                                 conv for other channels adapted (RGB summed for grey)
    freeze: str = ""                # "" | stem | layer1..layer4: frozen up to and including it (BN in eval mode there)
    stem: str = "learned"           # airbench: learned | whiten (frozen, from the training images' patch covariance)
    stem_bias_epochs: float = 0.0   # airbench: a bias on the stem, trained for the first N epochs then frozen; 0 = no
    #                                 bias; airbench: 3 (of ~10)
    dirac: bool = False             # airbench: the 3x3 convs start as the identity on their first channels (airbench)
    bn_eps: float = 0.0             # every BatchNorm's eps; 0 = the architecture's own (torch 1e-5); airbench: 1e-12
    bn_momentum: float = 0.0        # every BatchNorm's running-statistics momentum (weight of the new batch); 0 = own
    #                                 (torch 0.1); airbench: 0.4


@dataclass(frozen=True)
class DataConfig:
    name: str = "imagefolder"       # fashion_mnist | cifar10 | cifar100 | imagefolder | synthetic | fmnist_scenes
    root: str = ""                  # dataset folder; "" = the dataset's default location
    train_limit: int = 0            # use only the first N training images; 0 = all
    holdout: int = 0                # evaluate on the last N training images instead of the test split (tuning without
    #                                 the test set; taken before train_limit); 0 = the test split
    class_subset: tuple[int, ...] = ()  # keep only these classes (dataset indices), relabelled 0..k-1 in this
    #                                     order, both splits (fine-tuning on another split); () = all
    image_size: int = 224           # training crop / evaluation crop in pixels; paper: 224
    progressive_sizes: tuple[int, ...] = ()  # training image size of epochs 1, 2, ...; later epochs at image_size;
    #                                          () = off; e.g. [20, 24] (progressive resizing, FFCV-style)
    crop_ratio: float = 0.875       # eval: shorter edge to image_size/crop_ratio, centre crop (augment paper); 224/256
    augment: str = "paper"          # paper (§2) | small (pad-and-crop + flip, 28-32 px; + jitter, lighting) | none
    crop_area_min: float = 0.08     # random-resized crop: min fraction of the image area; paper: 0.08
    flip: float = 0.5               # horizontal flip probability; paper: 0.5
    flip_mode: str = "random"       # random (per image and epoch) | alternate (drawn once, inverted each epoch)
    jitter: float = 0.4             # brightness/saturation/hue factors in [1-j, 1+j] (paper, small); paper: 0.4
    lighting: float = 0.1           # PCA lighting noise std (paper, small; 3 channels); paper: 0.1
    pad: int = 4                    # "small" preset: padding in pixels before the random crop
    pad_mode: str = "zeros"         # "small" preset: zeros | reflect (the image mirrored at its edges; airbench)
    strict: bool = False            # imagefolder: unreadable file = error (True) or skipped and counted (False)
    download: bool = False          # fetch fashion_mnist/cifar from the official location (MD5-checked) if missing
    num_classes: int = 10           # synthetic only: number of classes
    synthetic_samples: int = 512    # synthetic only: training images (test: a quarter)
    in_memory: str = "auto"         # auto | always | never: hold uint8 tensors on the device, augment in batches
    workers: int = 2                # DataLoader worker processes for per-image (imagefolder) data
    decode: str = "auto"            # per-image (imagefolder) training data: cpu (DataLoader workers) | device (JPEGs
    #                                 decoded in batches on the training device, §2 augmentation there) | auto
    #                                 (device on a GPU with augment paper, else cpu)
    timeout: float = 0.0            # seconds before a stuck DataLoader worker fails the run; 0 = no limit


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"               # sgd (paper §2) | adamw | lars | lamb | muon; each reads only its own fields below
    lr: float = 0.1                 # peak learning rate (per 256 images when tricks.linear_scaling); paper: 0.1
    momentum: float = 0.9           # sgd, lars, muon's sgd fallback; paper: 0.9
    nesterov: bool = True           # Nesterov momentum: sgd (paper §2), lars, muon (and its sgd fallback)
    weight_decay: float = 1e-4      # every optimizer, its own kind: L2 in the gradient (sgd, lars), decoupled from it
    #                                 (adamw, lamb, muon); paper: 1e-4 (sgd)
    head_lr_mult: float = 1.0       # lr multiplier of the classifier head (fine-tuning a new head: e.g. 10)
    betas: tuple[float, ...] = (0.9, 0.999)  # adamw, lamb (and muon's adamw fallback): moment decays (β1, β2)
    eps: float = 1e-8               # adamw, lamb, lars (and muon's adamw fallback): denominator guard
    trust_coefficient: float = 0.001  # lars: η of the layer-wise trust ratio η·|w|/|g + λw| (You et al. 2017)
    muon_momentum: float = 0.95     # muon: momentum of the orthogonalised update (Muon's default; airbench: 0.6)
    ns_steps: int = 5               # muon: Newton-Schulz iterations per update (Muon's default; airbench: 3)
    muon_takes: str = "filters"     # muon: every conv filter (airbench) | hidden (all but the input layer's)
    fallback: str = "sgd"           # muon: the optimizer of everything else (BN, biases, the head): sgd | adamw
    fallback_lr_mult: float = 1.0   # muon: the fallback's lr = the schedule's x this (airbench: SGD ~0.2-3x Muon's)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "step"              # step (paper §2) | cosine (§5.1) | linear; per iteration, decay after warmup
    milestones: tuple[float, ...] = (30.0, 60.0, 90.0)  # step: lr *= gamma at these absolute epochs; paper: 30/60/90
    #                                                    (warmup eats into the first phase, it does not shift them)
    gamma: float = 0.1              # step: decay factor; paper: 0.1
    floor: float = 0.0              # cosine/linear: final learning rate
    extended_from: tuple[int, ...] = ()  # epochs of the shorter runs this one extends (train --resume RUN
    #                                      --epochs N): up to epoch e the lr and tricks.mix_off_epochs follow an
    #                                      e-epoch run, then the next length's; () = one schedule for train.epochs


@dataclass(frozen=True)
class TricksConfig:
    linear_scaling: bool = False    # §3.1 lr = optim.lr x global_batch / 256
    warmup_epochs: float = 0.0      # §3.1 linear ramp from 0, per iteration; paper: 5
    zero_gamma: bool = False        # §3.1 gamma = 0 in the last BN of each residual block
    no_bias_decay: bool = False     # §3.1 weight decay on conv/linear weights only
    bn_lr_mult: float = 1.0         # lr of batch-norm gamma/beta = scheduled lr x this; 1 = off; airbench: ~64 on beta
    bn_freeze_gamma: bool = False   # batch-norm gamma fixed at 1 (not trained); airbench: on
    label_smoothing: float = 0.0    # §5.2 epsilon; paper: 0.1
    label_smoothing_form: str = "paper"  # paper: eps/(K-1) on wrong classes | uniform: eps/K (timm/torchvision)
    mixup_alpha: float = 0.0        # §5.4 Beta(alpha, alpha); 0 = off; paper: 0.2
    cutmix_alpha: float = 0.0       # CutMix Beta(alpha, alpha); 0 = off; common: 1.0
    mix_off_epochs: int = 0         # no mixup/CutMix in the last N epochs
    cutout: int = 0                 # Cutout box side in pixels; 0 = off
    random_erasing: float = 0.0     # random-erasing probability per image; 0 = off
    distill_teacher: str = ""       # §5.3 teacher run folder or checkpoint; "" = off
    distill_temperature: float = 20.0  # §5.3 T; paper: 20
    distill_hard_weight: float = 1.0   # weight of the hard-label loss next to T^2 x soft loss
    ema_decay: float = 0.0          # EMA of weights per step (evaluated alongside); 0 = off; common: 0.9998
    ema_warmup: bool = False        # EMA: the n-th update uses min(ema_decay, (1+n)/(10+n)), so the average forgets
    #                                 the initial weights in a run of any length (one a budget sizes); false: every
    #                                 update uses ema_decay (timm's default)
    lookahead_every: int = 0        # every k steps slow <- d*slow + (1-d)*fast, fast <- slow; 0 = off; airbench: 5
    lookahead_decay: float = 0.77   # lookahead: d at the end of training (ramped up from 0); airbench: 0.95^5
    lookahead_ramp: float = 3.0     # lookahead: d = lookahead_decay x (fraction of training done)^ramp; airbench: 3
    randaugment_ops: int = 0        # RandAugment ops per image; 0 = off; common: 2
    randaugment_magnitude: int = 9  # RandAugment magnitude in [0, 30]
    tta: str = "none"               # test-time augmentation of every evaluation: none | flip (mean logits of the
    #                                 image and its mirror) | flip_shift (also 1 px shifts, weighted half:
    #                                 airbench94's); reported beside plain


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 120               # run length in epochs (paper: 120; 200 with mixup) unless steps or budget is set
    steps: int = 0                  # run length in optimizer steps, whatever the data's size (the last epoch may be
    #                                 partial; train.epochs is then not used); 0 = train.epochs
    budget: str = ""                # wall time of the whole run, e.g. 170 | 170s | 3min | 1.5h: sets train.steps from
    #                                 the speed measured at the start (recorded in the run folder); "" = off
    resized_at: tuple[int, ...] = ()  # recorded by train.budget: the global steps after which it re-sized the run to
    #                                   the machine's speed since (the schedule's rest stretched or squeezed); () = none
    resized_from: tuple[int, ...] = ()  # recorded with them: the run's length in steps until each of train.resized_at
    batch_size: int = 256           # images per step per process (global = batch_size x world size)
    seed: int = 0                   # seeds init, data order and every augmentation
    precision: str = "fp32"         # fp32 | fp16 (autocast + dynamic loss scale) | bf16 (autocast) | auto (bf16 where
    #                                 the device computes it natively, else fp32 on a CPU, fp16 on a GPU; recorded)
    channels_last: bool = False     # NHWC memory format for convolutions
    compile: str = "none"           # none | model (torch.compile the model) | step (forward + loss compiled as one;
    #                                 on a GPU the whole step captured in CUDA graphs); older true/false = model/none
    small_convs: str = "matmul"     # CPU, train.compile none: matmul = convolutions with outputs of a few pixels (1x1;
    #                                 up to 2x2, 4x4 with bf16 on AMX) take their weight gradient (at 1x1 all of it)
    #                                 from matrix products, 2-12x faster there | native = torch's oneDNN kernels only
    device: str = "auto"            # auto (cuda if available) | cpu | cuda | cuda:N
    threads: int = 0                # torch intra-op threads on CPU; 0 = torch's default
    checkpoint_every_steps: int = 0  # extra mid-epoch checkpoints every N steps; 0 = end of epoch only
    keep_checkpoints: int = 2       # newest checkpoints kept in the run folder (>= 1)
    eval_every: int = 1             # evaluate every N epochs (and always after the last)
    eval_batch_size: int = 0        # 0 = 2 x batch_size
    log_every_steps: int = 50       # device-to-host sync of running metrics every N steps
    max_bad_steps: int = 20         # consecutive non-finite losses before the run stops with an error
    resume: str = ""                # "" | auto: continue from the newest valid checkpoint in the run folder


@dataclass(frozen=True)
class TransferConfig:
    """§6: the classifier's backbone under a detection or segmentation head (`bagoftricks transfer` only).
    The backbone is the model section's classifier, its weights model.pretrained (a `train` run, or a
    torchvision/timm file)."""
    task: str = "detect"            # detect (Faster R-CNN + FPN) | segment (FCN); `transfer --task` sets it
    head: str = "fcn"               # segment: fcn (FCNHead, the paper's) | deeplabv3 (ASPP, rates fitted to the map)
    frozen_bn: bool = True          # backbone BN as FrozenBatchNorm2d (statistics and affine fixed); torchvision: True
    trainable_layers: int = 3       # backbone layers trained, counted from the last stage (the stem counts as one)
    backbone_lr_mult: float = 1.0   # backbone lr = head lr x this (0 < m); common: 0.1-1
    fpn_channels: int = 64          # detect: FPN output channels; torchvision: 256
    anchor_scale: float = 8.0       # detect: anchor side = anchor_scale x level stride, capped at data.image_size
    #                                 (torchvision's 32 px anchors at stride 4)
    aux_weight: float = 0.5         # segment: loss weight of the auxiliary FCN head on the second-last stage; 0 = none
    scale_jitter: float = 0.0       # training images scaled by a factor uniform in [1-j, 1+j], boxes/masks alike
    train_scenes: int = 2000        # fmnist_scenes: training scenes (from the 60000 training garments)
    test_scenes: int = 500          # fmnist_scenes: test scenes (from the 10000 test garments)


@dataclass(frozen=True)
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    tricks: TricksConfig = field(default_factory=TricksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)


SECTIONS = {f.name: f.type for f in fields(Recipe)}
_SECTION_TYPES = {
    "model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "tricks": TricksConfig, "train": TrainConfig, "transfer": TransferConfig,
}

# The recipe's own choices; every other list is owned by the package that implements it.
PRECISIONS = ("fp32", "fp16", "bf16", "auto")  # train.precision
IN_MEMORY = ("auto", "always", "never")  # data.in_memory
COMPILE_MODES = ("none", "model", "step")  # train.compile
SMALL_CONVS = ("matmul", "native")  # train.small_convs
RESUME = ("", "auto")  # train.resume
TRANSFER_TASKS = ("detect", "segment")  # transfer.task
SEGMENT_HEADS = ("fcn", "deeplabv3")  # transfer.head

CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": DATASETS + TRANSFER_DATASETS,
    "data.augment": AUGMENTS,
    "data.in_memory": IN_MEMORY,
    "data.decode": DECODES,
    "data.flip_mode": FLIP_MODES,
    "data.pad_mode": PAD_MODES,
    "model.variant": tuple(VARIANTS),
    "model.init": INITS,
    "model.activation": tuple(ACTIVATIONS),
    "model.stem": STEMS,
    "model.freeze": FREEZE_POINTS,
    "schedule.kind": SCHEDULE_KINDS,
    "optim.name": OPTIMIZERS,
    "optim.muon_takes": MUON_TAKES,
    "optim.fallback": MUON_FALLBACKS,
    "tricks.label_smoothing_form": LABEL_SMOOTHING_FORMS,
    "tricks.tta": TTA_MODES,
    "train.precision": PRECISIONS,
    "train.compile": COMPILE_MODES,
    "train.small_convs": SMALL_CONVS,
    "train.resume": RESUME,
    "transfer.task": TRANSFER_TASKS,
    "transfer.head": SEGMENT_HEADS,
}


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _SECTION_TYPES.items() for f in fields(cls)]


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean a, b?)' with the options closest to `name`, or '' when none is close."""
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if not close:  # also try matching the last component only ("lr" -> "optim.lr")
        tail = {o.split(".")[-1]: o for o in options}
        close = [tail[c] for c in difflib.get_close_matches(name.split(".")[-1], list(tail), n=3, cutoff=0.6)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


# Values that older recipe.yaml files hold for a field whose type changed since, read as what they meant then,
# so that run folders written before still resume: train.compile was a bool (true = torch.compile the model).
_LEGACY_VALUES = {"train.compile": {"true": "model", "false": "none"}}


def _legacy(key: str, value: Any) -> Any:
    table = _LEGACY_VALUES.get(key)
    if table is None or not isinstance(value, (bool, str)):
        return value
    return table.get(str(value).lower(), value)


def _field_type(cls, name: str):
    hints = typing.get_type_hints(cls)
    return hints[name]


def _coerce(key: str, typ, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise RecipeError naming the key."""
    origin = typing.get_origin(typ)
    given = value
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if value is None:
                return ""
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                if value.strip().startswith("["):
                    value = yaml.safe_load(value)
                else:
                    value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                value = [value]
            (elem, _) = typing.get_args(typ)
            return tuple(_coerce(key, elem, v) for v in value)
    except (TypeError, ValueError):
        pass
    what = _TYPE_WORDS.get(typ) or _LIST_WORDS.get(key, "a list of epochs, e.g. [30, 60, 90]")
    raise RecipeError(f"{key}: expected {what}, got {given!r}")


# How a value of each field type is described in an error (the tuple fields hold epochs, unless listed).
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_LIST_WORDS = {"data.progressive_sizes": "a list of image sizes in pixels, e.g. [20, 24]",
               "data.class_subset": "a list of class indices, e.g. [5, 6, 7, 8, 9]",
               "optim.betas": "two decays, e.g. [0.9, 0.999]",
               "train.resized_at": "a list of steps, e.g. [1872, 3744]",
               "train.resized_from": "a list of lengths in steps, e.g. [5100, 4900]"}


def from_dict(data: dict | None, base: Recipe | None = None, source: str = "recipe") -> Recipe:
    """Build a Recipe from a nested dict (partial is fine). Unknown keys are errors."""
    base = base or Recipe()
    data = data or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    sections = {}
    for sname, svalue in data.items():
        if sname not in _SECTION_TYPES:
            raise RecipeError(f"{source}: unknown section '{sname}'{suggest(str(sname), list(_SECTION_TYPES))}")
        if svalue is None:
            continue
        if not isinstance(svalue, dict):
            raise RecipeError(f"{source}: section '{sname}' must be a mapping, got {svalue!r}")
        cls = _SECTION_TYPES[sname]
        names = {f.name for f in fields(cls)}
        updates = {}
        for k, v in svalue.items():
            key = f"{sname}.{k}"
            if k not in names:
                raise RecipeError(f"{source}: unknown key '{key}'{suggest(key, all_keys())}")
            updates[k] = _coerce(key, _field_type(cls, k), _legacy(key, v))
        if sname == "model":
            _variant_name(updates, source)
        sections[sname] = replace(getattr(base, sname), **updates)
    return replace(base, **sections)


def _variant_name(model: dict, source: str) -> None:
    """model.arch written as a ResNet variant name, timm's way (resnet50d): the preset and model.variant
    (resnet50, D), in place; the same section setting model.variant to another letter is an error."""
    arch, letter = split_variant(str(model.get("arch", "")))
    if letter is None:
        return
    given = str(model.get("variant", letter)).upper()
    if given != letter:
        raise RecipeError(f"{source}: model.arch {model['arch']!r} is ResNet variant {letter}, but model.variant "
                          f"is {model['variant']!r}; set one of them")
    model.update(arch=arch, variant=letter)


def to_dict(recipe: Recipe) -> dict:
    out = {}
    for sname in _SECTION_TYPES:
        sec = dataclasses.asdict(getattr(recipe, sname))
        out[sname] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sec.items()}
    return out


def flat(recipe: Recipe) -> dict[str, Any]:
    """{"section.field": value} for every field (tuples as lists, as in YAML)."""
    return {f"{s}.{k}": v for s, sec in to_dict(recipe).items() for k, v in sec.items()}


def diff(a: Recipe, b: Recipe, ignore: tuple[str, ...] | frozenset[str] = ()) -> list[tuple[str, Any, Any]]:
    """The fields where two recipes differ, as (key, value in a, value in b), in field order."""
    fa, fb = flat(a), flat(b)
    return [(k, fa[k], fb[k]) for k in fa if k not in ignore and fa[k] != fb[k]]


# the fields a run resolves when it starts, to what the run folder's recipe.yaml records: a budget to the steps it
# chose (and no budget, and the re-sizes it made on the way: train.resized_at/_from) and a step schedule's milestones
# moved with them, precision "auto" to the precision the device computes natively; env.json keeps what was asked
ASKED_FIELDS = ("train.budget", "train.precision", "schedule.milestones")


def as_asked(recorded: Recipe, asked: dict[str, Any]) -> Recipe:
    """The recipe a run was given, from its folder's recipe.yaml (`recorded`) and what env.json records it was
    asked (`asked`, keys of ASKED_FIELDS; a key absent: the run took the field as recorded)."""
    tr = recorded.train
    if asked.get("train.budget"):
        tr = replace(tr, budget=str(asked["train.budget"]), steps=TrainConfig().steps, resized_at=(), resized_from=())
    if asked.get("train.precision"):
        tr = replace(tr, precision=str(asked["train.precision"]))
    sch = recorded.schedule
    if asked.get("schedule.milestones") is not None:
        sch = replace(sch, milestones=tuple(float(m) for m in asked["schedule.milestones"]))
    return replace(recorded, train=tr, schedule=sch)


def as_run_of(requested: Recipe, recorded: Recipe, asked: dict[str, Any] | None = None) -> Recipe:
    """`recorded` (a run folder's recipe.yaml) read as a run of `requested`. A budget `requested` leaves to the run
    is the one the run was asked (`asked`, env.json), in `requested`'s spelling where the seconds agree ("3min" =
    "180s"), not the steps it chose nor a step schedule's milestones moved with them; precision "auto" is whatever
    the run resolved it to (the machine decides, and folders written before env.json recorded the ask hold only the
    result). A field `requested` fixes stays as recorded (a rerun of recipe.yaml)."""
    tr = requested.train
    if tr.budget:
        recorded = as_asked(recorded, {k: v for k, v in (asked or {}).items()
                                       if k in ("train.budget", "schedule.milestones")})  # what the budget set
        if recorded.train.budget and budget_seconds(recorded.train.budget) == budget_seconds(tr.budget):
            recorded = replace(recorded, train=replace(recorded.train, budget=tr.budget))
    if tr.precision == "auto":
        recorded = replace(recorded, train=replace(recorded.train, precision="auto"))
    return recorded


def run_diff(requested: Recipe, recorded: Recipe, asked: dict[str, Any] | None = None,
             ignore: tuple[str, ...] | frozenset[str] = ()) -> list[tuple[str, Any, Any]]:
    """diff(requested, recorded) for a run folder: whether `recorded` (its recipe.yaml) is the run of `requested`,
    read as one (`as_run_of`)."""
    return diff(requested, as_run_of(requested, recorded, asked), ignore)


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, default_flow_style=None)


SPECS_GROUP = "ablations"  # the shipped folder of ablation specs (`bagoftricks ablate`), not recipes


def shipped_folder() -> Path:
    """The folder of the recipes shipped inside the package (the repository's recipes/ links to it)."""
    return Path(str(importlib.resources.files("bagoftricks") / "recipes"))


def shipped_recipes() -> list[str]:
    """The names GROUP/NAME of the shipped recipes, sorted ("fmnist/fast-3min"); `bagoftricks recipes`
    lists them. The ablation specs beside them are not recipes."""
    return sorted(f"{p.parent.name}/{p.stem}" for p in shipped_folder().glob("*/*.yaml")
                  if p.parent.name != SPECS_GROUP)


def resolve_recipe_path(name_or_path: str | Path, relative_to: str | Path | None = None) -> Path:
    """The recipe file that `name_or_path` names, by this rule:

    1. an existing file wins (a relative path is taken relative to `relative_to`, default the working
       directory; an ablation spec passes its own folder);
    2. otherwise GROUP/NAME, with or without ``.yaml``, is a shipped recipe's file ("fmnist/fast-3min");
    3. otherwise a RecipeError names what was given, says it is neither a file nor a shipped recipe, and
       suggests the closest shipped names.
    """
    given = str(name_or_path)
    p = Path(name_or_path)
    local = p if relative_to is None or p.is_absolute() else Path(relative_to) / p
    if local.is_file():
        return local
    name = given.removesuffix(".yaml")
    names = shipped_recipes()
    if name in names:
        return shipped_folder() / f"{name}.yaml"
    same = [n for n in names if n.split("/")[-1] == name.split("/")[-1]]  # "all" -> fmnist/all
    hint = suggest(name, names) or (f" (did you mean {', '.join(same)}?)" if same else "")
    where = f" (relative to {relative_to})" if relative_to is not None and not p.is_absolute() else ""
    raise RecipeError(f"recipe {given!r} is neither a file{where} nor a shipped recipe{hint}; "
                      f"`bagoftricks recipes` lists the shipped ones")


def recipe_header(path: str | Path) -> list[str]:
    """A recipe file's header comment: the `#` lines above its first key, without the `# `."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def shipped_summaries() -> dict[str, str]:
    """{name: the first line of its own header} for every shipped recipe. Header lines a recipe shares with
    another of its group (a common preamble, as the Fashion-MNIST ladder's and the paper's) and indented
    lines (the launch command) are skipped, so that each names what it adds; the first line when none is left."""
    headers = {name: recipe_header(shipped_folder() / f"{name}.yaml") for name in shipped_recipes()}
    out = {}
    for name, lines in headers.items():
        group = name.split("/")[0]
        shared = {line for other, ls in headers.items() if other != name and other.split("/")[0] == group
                  for line in ls}
        own = [s for s in lines if s.strip() and s not in shared and not s[:1].isspace()]
        out[name] = (own or [s for s in lines if s.strip()] or [""])[0].strip()
    return out


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a recipe (None = the paper's baseline), apply ``a.b=v`` overrides, validate.

    `path` is a YAML file or a shipped recipe's name (resolve_recipe_path: an existing file wins, then
    GROUP/NAME among the shipped recipes, "fmnist/fast-3min" or "fmnist/fast-3min.yaml")."""
    recipe = Recipe()
    if path is not None:
        p = resolve_recipe_path(path)
        recipe = from_dict(read_yaml(p), recipe, source=str(p))
    recipe = apply_overrides(recipe, overrides)
    validate(recipe, changed=override_keys(overrides))
    return recipe


def yaml_problem(e: yaml.YAMLError) -> str:
    """What the YAML parser found wrong, and where: 'line L, column C: problem (context at line L2)'."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark is not None and cmark is not mark:
        problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
    elif context:
        problem += f" ({context})"
    return where + problem


def read_yaml(path: str | Path, error: type[Exception] = RecipeError) -> Any:
    """A YAML file's content; `error` naming the file, line and column when it does not parse."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML: {yaml_problem(e)}") from None


def override_keys(overrides: list[str] | tuple[str, ...] | None) -> frozenset[str]:
    """The keys that `a.b=v` overrides set."""
    return frozenset(item.split("=", 1)[0].strip() for item in overrides or () if "=" in item)


def apply_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...] | None) -> Recipe:
    for item in overrides or ():
        if "=" not in item:
            raise RecipeError(f"override '{item}': expected section.field=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key.count(".") != 1:
            raise RecipeError(f"override '{item}': unknown key '{key}'{suggest(key, all_keys())}")
        sname, fname = key.split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise RecipeError(f"override '{item}': the value is not valid YAML: {yaml_problem(e)}") from None
        recipe = from_dict({sname: {fname: value}}, recipe, source="--set")
    return recipe


def _check(cond: bool, key: str, value: Any, what: str) -> None:
    if not cond:
        raise RecipeError(f"{key}: {what}, got {value!r}")


def _check_pair(cond: bool, changed: frozenset[str], first: tuple[str, Any, str], second: tuple[str, Any, str]) -> None:
    """A rule between two fields, reported on the one the user set: `second` when only it was
    overridden, else `first`. Each is (key, value, what is wrong)."""
    key, value, what = second if second[0] in changed and first[0] not in changed else first
    _check(cond, key, value, what)


def validate(r: Recipe, changed: frozenset[str] | set[str] = frozenset()) -> Recipe:
    """Check every value; raise RecipeError naming the first bad field. Does not import torch.

    `changed`: the keys the user set on the command line; a rule between two fields names the one
    the user set (``--set train.epochs=2`` against a recipe's 5 warmup epochs names train.epochs).
    """
    changed = frozenset(changed)
    for key, options in CHOICES.items():
        s, f = key.split(".")
        v = getattr(getattr(r, s), f)
        _check(v in options, key, v, f"must be one of {', '.join(repr(o) for o in options)}")
    _validate_model(r.model)
    _validate_data(r.data)
    _validate_train(r.train)  # before the rules that compare other fields with train.epochs
    _validate_optim(r.optim, r.schedule, changed)
    # a length in steps (or a budget) has its epochs once the data is known: the engine checks these rules then
    epochs = r.train.epochs if length_in_epochs(r.train) else _UNKNOWN_EPOCHS
    _check(length_in_epochs(r.train) or not r.schedule.extended_from, "schedule.extended_from",
           list(r.schedule.extended_from), "extends runs sized in epochs: leave train.steps 0 and train.budget empty")
    _validate_schedule_length(r.schedule, epochs, changed)
    _validate_progressive(r.data, epochs, changed)
    _validate_tricks(r.tricks, epochs, changed)
    _check_pair(r.data.decode != "device" or not r.tricks.randaugment_ops, changed,
                ("data.decode", r.data.decode, "augments whole batches on the device, but tricks.randaugment_ops runs "
                 "per image on the host: set data.decode: cpu"),
                ("tricks.randaugment_ops", r.tricks.randaugment_ops, "runs per image on the host, but data.decode: "
                 "device augments whole batches on the device: set data.decode: cpu"))
    _validate_transfer(r.transfer)
    return r


def _validate_model(m: ModelConfig) -> None:
    archs = list_models()
    _check(m.arch in archs, "model.arch", m.arch,
           f"unknown model{suggest(m.arch, archs) or ''}; known: {', '.join(archs)}")
    _check(m.width >= 0, "model.width", m.width, "must be >= 0")
    _check(m.se_reduction >= 0, "model.se_reduction", m.se_reduction, "must be >= 0")
    _check(m.groups >= 1, "model.groups", m.groups, "must be >= 1")
    _check(m.width_per_group >= 0, "model.width_per_group", m.width_per_group, "must be >= 0")
    _check(0.0 <= m.drop_path < 1.0, "model.drop_path", m.drop_path, "must be in [0, 1)")
    _check(0.0 < m.width_mult <= 4.0, "model.width_mult", m.width_mult, "must be in (0, 4]")
    _check(m.stem_bias_epochs >= 0, "model.stem_bias_epochs", m.stem_bias_epochs, "must be >= 0 (0 = no stem bias)")
    _check(0 <= m.bn_eps < 1, "model.bn_eps", m.bn_eps, "must be in [0, 1) (0 = the architecture's own)")
    _check(0 <= m.bn_momentum <= 1, "model.bn_momentum", m.bn_momentum, "must be in [0, 1] (0 = the model's own)")
    if m.freeze:
        spec = model_spec(m.arch)
        stages = {"resnet": 4, "resnet_small": 3}.get(spec.family, 0)
        _check(stages > 0, "model.freeze", m.freeze, f"freezes ResNet stages; {m.arch} has none")
        _check(m.freeze == "stem" or int(m.freeze[5:]) <= stages, "model.freeze", m.freeze,
               f"{m.arch} has {stages} stages (layer1..layer{stages})")


def _validate_data(d: DataConfig) -> None:
    _check(d.train_limit >= 0, "data.train_limit", d.train_limit, "must be >= 0 (0 = all)")
    _check(d.holdout >= 0, "data.holdout", d.holdout, "must be >= 0 (0 = evaluate on the test split)")
    cs = list(d.class_subset)
    _check(not cs or (len(cs) >= 2 and len(set(cs)) == len(cs) and min(cs) >= 0), "data.class_subset", cs,
           "must be at least 2 different class indices >= 0 (or [] for all)")
    _check(8 <= d.image_size <= 1024, "data.image_size", d.image_size, "must be in [8, 1024]")
    _check(0.0 < d.crop_ratio <= 1.0, "data.crop_ratio", d.crop_ratio, "must be in (0, 1]")
    _check(d.augment == "paper" or d.crop_ratio == DataConfig.crop_ratio, "data.crop_ratio", d.crop_ratio,
           f"is used with data.augment: paper only ('{d.augment}' trains and evaluates on the whole image)")
    _check(0.0 < d.crop_area_min <= 1.0, "data.crop_area_min", d.crop_area_min, "must be in (0, 1]")
    _check(0.0 <= d.flip <= 1.0, "data.flip", d.flip, "must be a probability in [0, 1]")
    _check(d.flip_mode == "random" or d.augment != "none", "data.flip_mode", d.flip_mode,
           "flips images, but data.augment is 'none' (no augmentation); use 'random' or another data.augment")
    _check(0.0 <= d.jitter < 1.0, "data.jitter", d.jitter, "must be in [0, 1)")
    _check(d.lighting >= 0.0, "data.lighting", d.lighting, "must be >= 0")
    _check(d.pad >= 0, "data.pad", d.pad, "must be >= 0")
    _check(d.num_classes >= 2, "data.num_classes", d.num_classes, "must be >= 2")
    _check(d.synthetic_samples >= 1, "data.synthetic_samples", d.synthetic_samples, "must be >= 1")
    _check(d.workers >= 0, "data.workers", d.workers, "must be >= 0")
    _check(d.timeout >= 0, "data.timeout", d.timeout, "must be >= 0")
    _check(d.decode != "device" or d.name == "imagefolder", "data.decode", d.decode,
           f"decodes the files of an image folder; {d.name} is not read from image files (use 'auto')")
    _check(d.decode != "device" or d.augment == "paper", "data.decode", d.decode,
           f"needs data.augment: paper (it draws the §2 crop on each image's own size; data.augment is {d.augment!r})")
    _check(d.decode != "device" or d.in_memory != "always", "data.decode", d.decode,
           "reads the training images per image, but data.in_memory is 'always'; set one of the two")


def _validate_optimizer_fields(o: OptimConfig) -> None:
    """A field the chosen optimizer does not read, set away from its default, is an error (the list of what
    each reads is tricks.catalog.OPTIMIZER_FIELDS: it grows with the fields, nothing is refused by omission)."""
    reads = optim_fields(o.name, o.fallback)
    default = OptimConfig()
    for f in fields(OptimConfig):
        here = getattr(o, f.name)
        if f.name not in reads and here != getattr(default, f.name):
            raise RecipeError(f"optim.{f.name}: {o.name} does not read this field (set to {here!r}); it reads "
                              f"{', '.join('optim.' + k for k in reads if k != 'name')}")
    _check(len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", list(o.betas),
           "must be two decays in [0, 1), e.g. [0.9, 0.999]")
    _check(o.eps > 0, "optim.eps", o.eps, "must be > 0")
    _check(o.trust_coefficient > 0, "optim.trust_coefficient", o.trust_coefficient, "must be > 0")
    _check(0.0 <= o.muon_momentum < 1.0, "optim.muon_momentum", o.muon_momentum, "must be in [0, 1)")
    _check(1 <= o.ns_steps <= 20, "optim.ns_steps", o.ns_steps, "must be in [1, 20]")
    _check(math.isfinite(o.fallback_lr_mult) and o.fallback_lr_mult > 0, "optim.fallback_lr_mult",
           o.fallback_lr_mult, "must be > 0")


def _validate_optim(o: OptimConfig, s: ScheduleConfig, changed: frozenset[str]) -> None:
    _validate_optimizer_fields(o)
    _check(math.isfinite(o.lr) and o.lr > 0, "optim.lr", o.lr, "must be > 0")
    _check(0.0 <= o.momentum < 1.0, "optim.momentum", o.momentum, "must be in [0, 1)")
    _check_pair(not (o.nesterov and o.momentum == 0), changed,
                ("optim.nesterov", o.nesterov, "needs optim.momentum > 0"),
                ("optim.momentum", o.momentum, "must be > 0 while optim.nesterov is true (set it to false too)"))
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _check(math.isfinite(o.head_lr_mult) and o.head_lr_mult > 0, "optim.head_lr_mult", o.head_lr_mult, "must be > 0")
    _check(all(m > 0 for m in s.milestones), "schedule.milestones", list(s.milestones), "must be positive epochs")
    _check(list(s.milestones) == sorted(s.milestones), "schedule.milestones", list(s.milestones), "must be increasing")
    _check(0.0 < s.gamma <= 1.0, "schedule.gamma", s.gamma, "must be in (0, 1]")
    _check(s.floor >= 0.0, "schedule.floor", s.floor, "must be >= 0")
    _check_pair(s.floor < o.lr, changed, ("schedule.floor", s.floor, f"must be below optim.lr ({o.lr:g})"),
                ("optim.lr", o.lr, f"must be above schedule.floor ({s.floor:g})"))


def _validate_schedule_length(s: ScheduleConfig, epochs: int, changed: frozenset[str]) -> None:
    ext = list(s.extended_from)
    _check(all(e > 0 for e in ext) and ext == sorted(set(ext)), "schedule.extended_from", ext,
           "must be increasing positive epochs")
    _check_pair(not ext or ext[-1] < epochs, changed,
                ("schedule.extended_from", ext, f"must be below train.epochs ({epochs})"),
                ("train.epochs", epochs, f"must be more than the extended run's {ext[-1] if ext else 0} epochs "
                                         f"(schedule.extended_from)"))


def _validate_progressive(d: DataConfig, epochs: int, changed: frozenset[str]) -> None:
    sizes = list(d.progressive_sizes)
    _check(all(8 <= s <= d.image_size for s in sizes), "data.progressive_sizes", sizes,
           f"must be sizes in [8, data.image_size ({d.image_size})] pixels")
    _check_pair(len(sizes) < epochs, changed,
                ("data.progressive_sizes", sizes, f"must leave the last epoch at data.image_size: at most "
                                                  f"train.epochs - 1 ({epochs - 1}) sizes"),
                ("train.epochs", epochs, f"must be more than the {len(sizes)} epochs of data.progressive_sizes"))


def _validate_tricks(t: TricksConfig, epochs: int, changed: frozenset[str]) -> None:
    _check(t.warmup_epochs >= 0.0, "tricks.warmup_epochs", t.warmup_epochs, "must be >= 0")
    _check_pair(t.warmup_epochs < epochs, changed,
                ("tricks.warmup_epochs", t.warmup_epochs, f"must be below train.epochs ({epochs})"),
                ("train.epochs", epochs, f"must be more than tricks.warmup_epochs ({t.warmup_epochs:g})"))
    _check(math.isfinite(t.bn_lr_mult) and t.bn_lr_mult > 0, "tricks.bn_lr_mult", t.bn_lr_mult, "must be > 0")
    _check_pair(not (t.bn_freeze_gamma and t.zero_gamma), changed,
                ("tricks.bn_freeze_gamma", t.bn_freeze_gamma, "would freeze tricks.zero_gamma's γ = 0 (switching "
                                                              "residual branches off for good); set one of the two"),
                ("tricks.zero_gamma", t.zero_gamma, "would be frozen at γ = 0 by tricks.bn_freeze_gamma; set one "
                                                    "of the two"))
    _check(0.0 <= t.label_smoothing < 1.0, "tricks.label_smoothing", t.label_smoothing, "must be in [0, 1)")
    _check(t.mixup_alpha >= 0, "tricks.mixup_alpha", t.mixup_alpha, "must be >= 0 (0 = off)")
    _check(t.cutmix_alpha >= 0, "tricks.cutmix_alpha", t.cutmix_alpha, "must be >= 0 (0 = off)")
    _check(t.mix_off_epochs >= 0, "tricks.mix_off_epochs", t.mix_off_epochs, "must be >= 0")
    _check_pair(t.mix_off_epochs <= epochs, changed,
                ("tricks.mix_off_epochs", t.mix_off_epochs, f"must be at most train.epochs ({epochs})"),
                ("train.epochs", epochs, f"must be at least tricks.mix_off_epochs ({t.mix_off_epochs})"))
    _check(t.cutout >= 0, "tricks.cutout", t.cutout, "must be >= 0 pixels")
    _check(0.0 <= t.random_erasing <= 1.0, "tricks.random_erasing", t.random_erasing,
           "must be a probability in [0, 1]")
    _check(t.distill_temperature > 0, "tricks.distill_temperature", t.distill_temperature, "must be > 0")
    _check(t.distill_hard_weight >= 0, "tricks.distill_hard_weight", t.distill_hard_weight, "must be >= 0")
    _check(0.0 <= t.ema_decay < 1.0, "tricks.ema_decay", t.ema_decay, "must be in [0, 1)")
    _check(t.ema_decay > 0 or not t.ema_warmup, "tricks.ema_warmup", t.ema_warmup,
           "needs tricks.ema_decay > 0 (with 0 no average is kept)")
    _check(t.lookahead_every >= 0, "tricks.lookahead_every", t.lookahead_every, "must be >= 0 steps (0 = off)")
    _check(0.0 <= t.lookahead_decay < 1.0, "tricks.lookahead_decay", t.lookahead_decay, "must be in [0, 1)")
    _check(t.lookahead_ramp >= 0.0, "tricks.lookahead_ramp", t.lookahead_ramp, "must be >= 0")
    _check(t.randaugment_ops >= 0, "tricks.randaugment_ops", t.randaugment_ops, "must be >= 0")
    top = RANDAUGMENT_BINS - 1
    _check(0 <= t.randaugment_magnitude <= top, "tricks.randaugment_magnitude", t.randaugment_magnitude,
           f"must be in [0, {top}]")


_UNKNOWN_EPOCHS = 10**9  # the epochs of a run sized in steps, until the engine knows the data
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$")
_BUDGET_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def budget_seconds(text: str) -> float:
    """train.budget in seconds: "170" and "170s" are 170, "3min" or "3m" 180, "1.5h" 5400; RecipeError otherwise."""
    m = _BUDGET.match(text)
    if not m or float(m.group(1)) <= 0:
        raise RecipeError(f"train.budget: expected a positive duration such as 170, 170s, 3min or 1.5h, got {text!r}")
    return float(m.group(1)) * _BUDGET_UNITS[m.group(2)]


def length_in_epochs(tr: TrainConfig) -> bool:
    """Whether train.epochs is the run's length (neither train.steps nor train.budget sets it)."""
    return tr.steps == 0 and not tr.budget


def _validate_train(tr: TrainConfig) -> None:
    _check(tr.epochs > 0, "train.epochs", tr.epochs, "must be > 0")
    _check(tr.steps >= 0, "train.steps", tr.steps, "must be >= 0 (0 = train.epochs sets the length)")
    if tr.budget:
        budget_seconds(tr.budget)
    _check(tr.batch_size > 0, "train.batch_size", tr.batch_size, "must be > 0")
    _check(tr.seed >= 0, "train.seed", tr.seed, "must be >= 0")
    _check(tr.threads >= 0, "train.threads", tr.threads, "must be >= 0")
    _check(tr.checkpoint_every_steps >= 0, "train.checkpoint_every_steps", tr.checkpoint_every_steps, "must be >= 0")
    _check(tr.keep_checkpoints >= 1, "train.keep_checkpoints", tr.keep_checkpoints, "must be >= 1")
    _check(tr.eval_every >= 1, "train.eval_every", tr.eval_every, "must be >= 1")
    _check(tr.eval_batch_size >= 0, "train.eval_batch_size", tr.eval_batch_size, "must be >= 0")
    _check(tr.log_every_steps >= 1, "train.log_every_steps", tr.log_every_steps, "must be >= 1")
    _check(tr.max_bad_steps >= 1, "train.max_bad_steps", tr.max_bad_steps, "must be >= 1")
    _validate_resized(tr)
    dev = tr.device
    _check(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
           "train.device", dev, "must be auto, cpu, cuda or cuda:N")


def _validate_resized(tr: TrainConfig) -> None:
    """train.resized_at / resized_from, which a budgeted run records: pairs (step k, the length until k), in order,
    each re-size before the end planned until then, in a run of train.steps steps."""
    at, lengths = list(tr.resized_at), list(tr.resized_from)
    if not at and not lengths:
        return
    _check(len(at) == len(lengths), "train.resized_at", at,
           f"must pair with train.resized_from {lengths}: one length for each step")
    _check(tr.steps > 0 and not tr.budget, "train.resized_at", at,
           "is recorded by train.budget in the run folder's recipe.yaml, with train.steps and no budget: set "
           "train.steps, or leave train.resized_at and train.resized_from empty")
    ends = [*lengths[1:], tr.steps]
    _check(all(k >= 1 for k in at) and at == sorted(set(at)), "train.resized_at", at, "must be increasing steps >= 1")
    for k, before, after in zip(at, lengths, ends, strict=True):
        _check(k < before, "train.resized_at", at, f"re-sizes at step {k} a run that had ended (train.resized_from: "
                                                   f"{before} steps)")
        _check(k < after, "train.resized_from", lengths, f"re-sizes at step {k} to {after} steps, not past it")


def _validate_transfer(t: TransferConfig) -> None:
    _check(0 <= t.trainable_layers <= 8, "transfer.trainable_layers", t.trainable_layers,
           "must be in [0, 8] (0 = the whole backbone frozen)")
    _check(math.isfinite(t.backbone_lr_mult) and t.backbone_lr_mult > 0, "transfer.backbone_lr_mult",
           t.backbone_lr_mult, "must be > 0 (freeze layers with transfer.trainable_layers instead)")
    _check(t.fpn_channels >= 1, "transfer.fpn_channels", t.fpn_channels, "must be >= 1")
    _check(t.anchor_scale > 0, "transfer.anchor_scale", t.anchor_scale, "must be > 0")
    _check(t.aux_weight >= 0, "transfer.aux_weight", t.aux_weight, "must be >= 0 (0 = no auxiliary head)")
    _check(0.0 <= t.scale_jitter < 1.0, "transfer.scale_jitter", t.scale_jitter, "must be in [0, 1)")
    _check(t.train_scenes >= 1, "transfer.train_scenes", t.train_scenes, "must be >= 1")
    _check(t.test_scenes >= 1, "transfer.test_scenes", t.test_scenes, "must be >= 1")
