"""Low precision on the one training step: bf16/fp16 autocast of the backbone, the detector's heads in fp32,
fp16's loss scale and the guarded step, channels_last, and one `.backward()` in the whole source."""
import io
import tokenize
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bagoftricks.engine.derive import autocast
from bagoftricks.transfer.job import setup_transfer
from bagoftricks.transfer.loop import run_transfer
from tests.transfer.conftest import tiny

CPU = torch.device("cpu")
SRC = Path(__file__).resolve().parents[2] / "src" / "bagoftricks"


def _dtypes(job) -> dict:
    """Record the dtype of the FPN's maps, the RPN head's objectness and the box predictor's scores."""
    seen = {}
    m = job.model

    def hook(name, pick):
        def record(module, args, out) -> None:
            seen.setdefault(name, pick(out).dtype)
        return record
    m.backbone.fpn.register_forward_hook(hook("fpn", lambda o: next(iter(o.values()))))
    m.rpn.head.register_forward_hook(hook("rpn", lambda o: o[0][0]))
    m.roi_heads.box_predictor.register_forward_hook(hook("roi", lambda o: o[0]))
    return seen


@pytest.mark.parametrize("precision,low", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_steps_keep_the_detector_heads_in_fp32(precision, low):
    job = setup_transfer(tiny(f"train.precision={precision}"), CPU)
    assert job.scaler.is_enabled() == (precision == "fp16")      # fp16 scales its loss, bf16 needs no scale
    seen = _dtypes(job)
    res = job.step(list(range(4)), 0, 0)
    assert torch.isfinite(res.loss) and not bool(res.skipped) and res.loss.dtype == torch.float32
    assert seen == {"fpn": low, "rpn": torch.float32, "roi": torch.float32}
    job.model.eval()
    with torch.no_grad(), autocast(precision, CPU):
        out = job.model([torch.rand(1, 32, 32) * 255])
    assert out[0]["boxes"].dtype == torch.float32 and out[0]["scores"].dtype == torch.float32


def test_fp16_overflow_skips_the_step_and_halves_the_scale():
    job = setup_transfer(tiny("train.precision=fp16", "transfer.task=segment"), CPU)
    job.step(list(range(4)), 0, 0)
    job.scaler.update(2.0 ** 60)                                   # gradients x 2^60 overflow fp16
    before = {k: v.clone() for k, v in job.model.named_parameters()}
    res = job.step(list(range(4)), 0, 1)
    assert bool(res.skipped) and not bool(res.bad)                   # an overflow is routine, not a bad step
    after = dict(job.model.named_parameters())                       # (the heads' BN statistics do move)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert job.scaler.get_scale() == 2.0 ** 59


def test_segmentation_loss_reads_low_precision_logits_as_fp32():
    job = setup_transfer(tiny("train.precision=bf16", "transfer.task=segment", "transfer.aux_weight=0"), CPU)
    task = job.step.task
    inputs = task.inputs(list(range(4)), 0, 0)
    with autocast("bf16", CPU):
        out = task.forward(job.model, inputs)
    assert out["out"].dtype == torch.bfloat16
    loss = task.loss(out, inputs)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(F.cross_entropy(out["out"].float(), inputs[1], ignore_index=255).item())


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_channels_last_trains_like_the_default_layout(task):
    """NHWC weights (and segmentation batches): the same first loss, to float rounding (without the FCN head's
    dropout, whose random mask follows the memory layout)."""
    losses = []
    for cl in (False, True):
        job = setup_transfer(tiny(f"transfer.task={task}", f"train.channels_last={cl}"), CPU)
        for m in job.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if cl:
            assert all(p.is_contiguous(memory_format=torch.channels_last) for p in job.model.parameters()
                       if p.dim() == 4)
        losses.append(job.step(list(range(4)), 0, 0).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_a_bf16_run_end_to_end(tmp_path):
    final = run_transfer(tiny("transfer.task=segment", "train.precision=bf16", "train.channels_last=true",
                              "train.epochs=1"), tmp_path / "r", progress=False)
    assert 0 <= final["miou"] <= 100 and final["skipped_steps"] == 0
    assert "| bf16 channels_last on cpu" in (tmp_path / "r" / "run.log").read_text()


def test_the_only_backward_calls_are_the_guarded_step_and_the_bench_reference():
    """Every task trains through tricks.guarded_step (code tokens only: docstrings and comments may name it)."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        toks = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]
        for a, b, c in zip(toks, toks[1:], toks[2:]):
            if a.string == "." and b.string == "backward" and c.string == "(":
                calls.append(str(path.relative_to(SRC)))
    assert sorted(set(calls)) == ["bench.py", "tricks/guarded_step.py"]
