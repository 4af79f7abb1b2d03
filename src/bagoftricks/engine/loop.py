"""The training loop: `train()` runs a recipe into a run folder, epoch by epoch, around the one step.

The engine is the only reader of the recipe's trick fields: `engine.setup` applies the run-level
tricks once, `engine.step.TrainStep` the per-step ones; this module adds what a run needs around
them — the resume plan, the epoch loop, the end-of-epoch evaluation, checkpoints and the stop
protocol for SIGINT/SIGTERM.

A checkpoint holds the model, optimizer, scaler, EMA and the position (epoch e, step s); because every
random draw of a step comes from generators seeded by (seed, e, s, rank) and the data order of epoch
e from (seed, e), that is all a run needs to continue bit-exactly (RNG states are saved as well, for
inspection).
"""
from __future__ import annotations

import copy
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from bagoftricks import errors
from bagoftricks import recipe as brecipe
from bagoftricks.console import warnings_to
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import runfolder
from bagoftricks.engine.checkpoint import save_checkpoint
from bagoftricks.engine.evaluate import evaluate
from bagoftricks.engine.setup import (Training, base_lr, eval_batch_size, precision_note, resolve_device,
                                      scheduled_lr, setup_training, wrap_for_training)
from bagoftricks.engine.signals import StopFlag
from bagoftricks.engine.step import StepMeter
from bagoftricks.errors import CheckpointWriteError, NonFiniteLoss, TrainingInterrupted
from bagoftricks.files import append_jsonl, atomic_write_text, read_json_object, read_jsonl, write_json
from bagoftricks.recipe import Recipe


def train(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
          stop_after_steps: int = 0, extends: Extends | None = None) -> dict:
    """Train `r` into run folder `out_dir`; returns the final metrics record.

    resume=True continues from the newest valid checkpoint in out_dir (the folder's recipe is used).
    extends: a new run folder starts from another run's checkpoint (`engine.extend.extend_run`).
    progress: None = a progress bar on a terminal only, False = never. stop_after_steps (testing aid)
    stops the process's loop after that many global steps, with a checkpoint, as a signal would.

    Under torchrun (RANK/WORLD_SIZE set) the process group is joined first; rank 0 alone reads and
    writes the run folder and sends the checkpoint to the other ranks. A worker group restarted by
    torchrun (TORCHELASTIC_RESTART_COUNT > 0) resumes as with train.resume: auto.
    """
    brecipe.validate(r)
    out = Path(out_dir)
    dinfo = bdist.from_env()
    auto = r.train.resume == "auto" or bdist.elastic_restart_count() > 0
    try:
        if dinfo.enabled:
            bdist.init(dinfo, resolve_device(r.train.device, dinfo))
        plan = _plan_run(out, resume, auto, r, dinfo, extends)
        if plan["final"] is not None:
            if dinfo.is_main:
                print(f"run folder {out} is already complete ({plan['epochs']} epochs); to train it longer: "
                      f"bagoftricks train --resume {out} --epochs N --out NEW", flush=True)
            return plan["final"]
        state = plan["state"]
        if state is not None:
            r = brecipe.validate(brecipe.from_dict(state["recipe"]))
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        device = resolve_device(r.train.device, dinfo)
        bdist.init(dinfo, device)
        run = _Run(r, out, dinfo, device, progress, stop_after_steps, fresh=state is None)
        with warnings_to(run.log.warning_line):  # library warnings go to run.log, one line each
            run.start(plan["ckpt"], state, plan["skipped"], extends)
            record = run.loop()
        # Rank 0 still writes final.json when the others leave the loop: every rank leaves train() once
        # the run is complete on disk. Only a run that ended normally waits here: a rank that raised must
        # not block in a barrier its peers may never reach. (Finished workers that aborted at exit did so
        # with the process group's threads outliving train(): see distributed.init and .shutdown.)
        bdist.barrier(dinfo)
        return record
    finally:
        run = None  # the DDP-wrapped model holds the process group: released here, it is freed at shutdown
        bdist.shutdown()


class Extends(NamedTuple):
    """A finished run that a new run folder continues past its end (see engine/extend.py)."""
    run: Path          # the finished run folder (only read)
    checkpoint: Path   # its final checkpoint
    state: dict        # that checkpoint, its recipe replaced by the extended one


def _plan_run(out: Path, resume: bool, auto: bool, r: Recipe, dinfo: bdist.DistInfo,
              extends: Extends | None = None) -> dict:
    """Rank 0 reads the run folder and tells every rank what to do (no other rank touches it).

    Returns {"ckpt": path or None, "state": checkpoint or None, "skipped": [(path, msg)], "final":
    the final record when the run is already complete, else None, "epochs"}. An error on rank 0 is
    raised on every rank (the same class for the project's own errors), so no rank waits for the others.
    """
    plan, err = None, None
    if dinfo.is_main:
        try:
            skipped: list = []
            ckpt, state = runfolder.prepare_run_folder(out, resume, auto, requested=r, skipped=skipped)
            if extends is not None:  # a new folder (prepare_run_folder refused an existing run)
                ckpt, state = extends.checkpoint, extends.state
            final, epochs = None, 0
            if state is not None:
                epochs = brecipe.from_dict(state["recipe"]).train.epochs
                if int(state["epoch"]) >= epochs:  # nothing left to train: no state to send around
                    final, state = read_json_object(out / "final.json"), None
            plan = {"ckpt": ckpt, "state": state, "skipped": [(str(p), m) for p, m in skipped], "final": final,
                    "epochs": epochs}
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            if not dinfo.enabled:
                raise
            err = e
    if dinfo.enabled:
        box = bdist.broadcast_object(("error", type(err).__name__, str(err)) if err is not None else ("ok", plan),
                                     dinfo)
        if err is not None:
            raise err
        if box[0] == "error":
            cls = getattr(errors, box[1], None)
            if isinstance(cls, type) and issubclass(cls, (errors.BadInput, errors.RunFailure)):
                raise cls(box[2])
            raise RuntimeError(f"on rank 0: {box[1]}: {box[2]}")
        plan = box[1]
    return plan


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _nonfinite(model: nn.Module, ema) -> str:
    """The name of the first non-finite floating tensor of the model (or its EMA), or ''."""
    named = list(_unwrap(model).state_dict().items())
    if ema is not None:
        named += [(f"ema.{n}", t) for n, t in {**ema.params, **ema.buffers}.items()]
    for n, t in named:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return n
    return ""


def run_epochs(run, write_final: bool = True) -> dict:
    """The epoch loop a run object shares with the transfer run: from its start epoch to
    ``r.train.epochs`` under a StopFlag (``run.stop``), each epoch ``_train_epoch`` then ``_end_epoch``
    (timed from ``run.t_epoch``); then the TensorBoard writer closed and the last record, with the
    run's wall seconds, written to final.json (by the process that writes the folder)."""
    record: dict = {}
    with StopFlag() as stop:
        run.stop = stop
        for epoch in range(run.start_epoch, run.r.train.epochs):
            run.t_epoch = time.perf_counter()
            lr = run._train_epoch(epoch)
            record = run._end_epoch(epoch, lr)
    if run.writer is not None:
        run.writer.close()
    record = dict(record, wall_seconds=time.perf_counter() - run.t_start)
    if write_final:
        write_json(run.out / "final.json", record)
    return record


def _progress(enabled: bool | None, total: int, initial: int, desc: str):
    if enabled is False:
        return None
    from tqdm import tqdm
    disable = None if enabled is None else False  # None: only on a terminal
    bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, leave=False,
               dynamic_ncols=True, file=sys.stderr)
    return None if bar.disable else bar


def _new_acc() -> dict:
    # seconds: training time of the epoch; wall: the epoch's wall time before this attempt (a resumed epoch)
    return {"loss": 0.0, "images": 0, "seconds": 0.0, "skipped": 0, "wall": 0.0}


class _Run:
    """One process's part of a run: set-up, then the epoch loop with its checkpoint and stop protocol."""

    def __init__(self, r: Recipe, out: Path, dinfo: bdist.DistInfo, device: torch.device, progress: bool | None,
                 stop_after_steps: int, fresh: bool = True):
        self.t_start = self.t_epoch = time.perf_counter()
        self.r, self.out, self.dinfo, self.device = r, out, dinfo, device
        self.progress, self.stop_after_steps = progress, stop_after_steps
        self.t: Training = setup_training(r, device, dinfo, pretrained=fresh)  # a checkpoint holds the rest
        self.steps = self.t.steps_per_epoch
        self.start_epoch, self.start_step = 0, 0
        self.acc = _new_acc()
        self.global_done = 0  # steps this process has run (for stop_after_steps)
        self.meter: StepMeter | None = None
        self.metrics_path = out / "metrics.jsonl"
        self.log = runfolder.RunLog(out / "run.log", dinfo)
        self.writer = None

    # ------------------------------------------------------------------------------------- set-up
    def start(self, ckpt_path: Path | None, state: dict | None, skipped_ckpts, extends: Extends | None) -> None:
        """Load the checkpoint (if any), wrap the model, and prepare the run folder and its log."""
        if state is not None:
            self._load(state)
        wrap_for_training(self.t)
        if self.dinfo.is_main:
            self._write_folder(fresh=state is None or extends is not None, extends=extends)
        bdist.barrier(self.dinfo)
        if state is not None and extends is None and self.dinfo.is_main:
            self.t_start -= self._earlier_attempts_wall()
        if extends is not None:  # the new folder can be continued with --resume from the start
            self._checkpoint(self.start_epoch, 0)
        self.writer = runfolder.tensorboard(self.out / "tb") if self.dinfo.is_main else None
        self.log.log(f"run folder: {self.out}")
        for path, msg in skipped_ckpts:
            self.log.warn(f"{msg}; set aside as {Path(path).name}.corrupt, resuming from {Path(ckpt_path).name}")
        if extends is not None:
            self.log.warn(f"extending the finished run {extends.run} ({self.start_epoch} epochs) to "
                          f"{self.r.train.epochs} epochs: from epoch {self.start_epoch + 1} on the lr schedule is "
                          f"recomputed for {self.r.train.epochs} epochs, so this is no longer a single-schedule run "
                          f"(recipe.yaml: schedule.extended_from {list(self.r.schedule.extended_from)})")
        elif state is not None:
            self.log.log(f"resumed from {ckpt_path} at epoch {self.start_epoch + 1}, step {self.start_step}")
        self._log_summary()

    def _earlier_attempts_wall(self) -> float:
        """Wall seconds the attempts before this resume spent: the finished epochs' (metrics.jsonl, truncated
        to them) and the resumed epoch's before its stop (the checkpoint's accumulators); their set-up
        times are not recorded, so a resumed run's wall_seconds undercounts by those only."""
        done = sum(float(m.get("seconds") or 0.0) for m in read_jsonl(self.metrics_path))
        return done + float(self.acc.get("wall", 0.0))

    def _load(self, state: dict) -> None:
        t = self.t
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            t.scaler.load_state_dict(state["scaler"])
        if t.ema is not None and state.get("ema"):
            t.ema.load_state_dict(state["ema"])
        if t.lookahead is not None and state.get("lookahead"):
            t.lookahead.load_state_dict(state["lookahead"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.acc = dict(state.get("epoch_acc", self.acc))
        torch.set_rng_state(state["rng"]["torch"])

    def _write_folder(self, fresh: bool, extends: Extends | None = None) -> None:
        out, r, tr, data = self.out, self.r, self.r.train, self.t.data
        out.mkdir(parents=True, exist_ok=True)
        if not fresh:
            runfolder.truncate_metrics(self.metrics_path, self.start_epoch)
            return
        for stale in (self.metrics_path, out / "run.log", out / "final.json"):
            stale.unlink(missing_ok=True)
        atomic_write_text(out / "recipe.yaml", brecipe.dump(r))
        write_json(out / "classes.json", list(data.classes) or [str(k) for k in range(data.num_classes)])
        extra = {"base_lr": base_lr(r, self.dinfo.world_size), "global_batch": tr.batch_size * self.dinfo.world_size,
                 "steps_per_epoch": self.steps, "in_memory_data": data.in_memory, "num_classes": data.num_classes,
                 "skipped_files": data.skipped}
        if extends is not None:  # its epochs so far are this run's first ones
            extra["extends"] = {"run": str(extends.run), "checkpoint": str(extends.checkpoint),
                                "epochs": self.start_epoch}
            runfolder.copy_metrics(extends.run / "metrics.jsonl", self.metrics_path, self.start_epoch)
        write_json(out / "env.json", runfolder.env_record(self.device, tr.seed, self.dinfo.world_size, extra))

    def _log_summary(self) -> None:
        r, data, ws = self.r, self.t.data, self.dinfo.world_size
        self.log.log(f"model {r.model.arch}-{r.model.variant} | data {r.data.name} ({data.num_classes} classes, "
                     f"{'in-memory batched' if data.in_memory else 'per-image loader'}) | global batch "
                     f"{r.train.batch_size * ws} ({ws} x {r.train.batch_size}) | base lr "
                     f"{base_lr(r, ws):.4g} | {r.train.precision} on {self.device}")
        note = getattr(self.t.model, "pretrained_note", "")
        if note:
            self.log.log(note)
        slow = precision_note(r.train.precision, self.device)
        if slow:
            self.log.warn(slow)
        if data.skipped:
            self.log.log(f"skipped {data.skipped} unreadable image file(s) (data.strict: true makes them errors)")

    # --------------------------------------------------------------------------------- the loop
    def loop(self) -> dict:
        return run_epochs(self, write_final=self.dinfo.is_main)

    def _train_epoch(self, epoch: int) -> float:
        """The steps of one epoch (from the resumed step on); returns the last step's lr."""
        first = self.start_step if epoch == self.start_epoch else 0
        if first == 0:
            self.acc = _new_acc()
        self.t.step.module.train()
        tr = self.r.train
        self.bar = _progress(self.progress if self.dinfo.is_main else False, self.steps, first,
                             f"epoch {epoch + 1}/{tr.epochs}")
        self.bar_loss = "…"  # until the first read-back, train.log_every_steps steps in
        self.meter = StepMeter(self.device, self.meter)
        self.t_train = time.perf_counter()
        lr = scheduled_lr(self.r, 0, self.steps, self.dinfo.world_size)
        for s, (x, y) in enumerate(self.t.data.train.epoch(epoch, first), start=first):
            res = self.t.step(x, y, epoch, s)
            lr = res.lr
            self.meter.add(res, y.shape[0], epoch * self.steps + s, tr.max_bad_steps)
            self.global_done += 1
            self._after_step(epoch, s, lr)
        if self.bar is not None:
            self.bar.close()
        self.meter.raise_if_failed(self.steps)
        self._fold()
        return lr

    def _after_step(self, epoch: int, s: int, lr: float) -> None:
        """Read-back and progress, then the stop protocol and periodic checkpoints (collectives)."""
        tr = self.r.train
        last = s + 1 == self.steps
        readback = (s + 1) % tr.log_every_steps == 0 or last
        if readback:  # the only host reads of the step metrics: every log_every_steps steps
            self.meter.raise_if_failed(self.steps)
        if self.bar is not None:  # lr and img/s are known on the host; the loss only at a read-back
            if readback:
                self.bar_loss = f"{self.meter.mean_loss():.4f}"
            el = time.perf_counter() - self.t_train
            self.bar.set_postfix(loss=self.bar_loss, lr=f"{lr:.4g}", refresh=False,
                                 img_s=f"{self.meter.images * self.dinfo.world_size / max(el, 1e-9):.0f}")
            self.bar.update(1)
        test_stop = self._test_stop()
        # ranks agree on a stop (a collective and a host read) every step on CPU, where a host read
        # costs nothing, and at the read-back steps on an accelerator; alone, every step
        agree = readback or test_stop or not self.dinfo.enabled or self.device.type == "cpu"
        stop_sig = self._agree_stop(self.stop.signum or (signal.SIGTERM if test_stop else 0)) if agree else 0
        periodic = tr.checkpoint_every_steps and (epoch * self.steps + s + 1) % tr.checkpoint_every_steps == 0
        if stop_sig:
            self.stop.stopping = True  # torchrun's own SIGTERM to a stopping worker is not a second signal
        if (stop_sig or periodic) and not last:
            self.meter.raise_if_failed(self.steps)
            self._fold()
            self.meter = StepMeter(self.device, self.meter)
            self.t_train = time.perf_counter()
            path = self._checkpoint(epoch, s + 1)
            if stop_sig:
                if self.bar is not None:
                    self.bar.close()
                self.log.log(f"stopping at epoch {epoch + 1} step {s + 1}; checkpoint {path}")
                raise TrainingInterrupted(stop_sig, path, epoch * self.steps + s + 1)

    def _end_epoch(self, epoch: int, lr: float) -> dict:
        """Evaluate, record and log the epoch, write its checkpoint, and stop here if a signal came."""
        tr = self.r.train
        acc = self.acc
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / max(acc["images"], 1)}
        if (epoch + 1) % tr.eval_every == 0 or epoch + 1 == tr.epochs:
            record.update(self._evaluate())
        record.update(images_per_sec=acc["images"] / max(acc["seconds"], 1e-9), train_seconds=acc["seconds"],
                      seconds=self._epoch_wall(), skipped_steps=acc["skipped"])
        self._write_record(record, epoch)
        path = self._checkpoint(epoch + 1, 0)
        if epoch + 1 < tr.epochs:
            # a signal during the last step or the evaluation: stop here, at the epoch boundary
            stop_sig = self._agree_stop(self.stop.signum or (signal.SIGTERM if self._test_stop() else 0))
            if stop_sig:
                self.stop.stopping = True
                self.log.log(f"stopping after epoch {epoch + 1}; checkpoint {path}")
                raise TrainingInterrupted(stop_sig, path, (epoch + 1) * self.steps)
        return record

    def _evaluate(self) -> dict:
        r, t = self.r, self.t
        kw = dict(dinfo=self.dinfo, workers=r.data.workers, timeout=r.data.timeout)
        args = (t.data.test, t.data.eval_transform, eval_batch_size(r), self.device, r.train.precision,
                r.train.channels_last)
        kw["tta"] = r.tricks.tta
        ev = evaluate(t.model, *args, **kw)
        out = dict(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"], val_images=ev["images"])
        if "tta_top1" in ev:  # tricks.tta: beside the plain numbers
            out.update(val_tta_top1=ev["tta_top1"], val_tta_top5=ev["tta_top5"])
        if t.ema is not None:
            ema_model = copy.deepcopy(t.model)
            t.ema.copy_to(ema_model)
            ev2 = evaluate(ema_model, *args, **kw)
            out.update(ema_val_top1=ev2["top1"], ema_val_top5=ev2["top5"])
            if "tta_top1" in ev2:
                out.update(ema_val_tta_top1=ev2["tta_top1"])
        return out

    def _write_record(self, record: dict, epoch: int) -> None:
        if self.dinfo.is_main:
            append_jsonl(self.metrics_path, record)
            if self.writer is not None:
                for k, v in record.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        self.writer.add_scalar(k, v, epoch + 1)
                self.writer.flush()
        top = f" | top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}" if "val_top1" in record else ""
        if "val_tta_top1" in record:
            top += f" (TTA {self.r.tricks.tta}: top-1 {record['val_tta_top1']:.2f})"
        self.log.log(f"epoch {epoch + 1}/{self.r.train.epochs} | loss {record['train_loss']:.4f} | "
                     f"lr {record['lr']:.4g}{top} | {record['images_per_sec']:.0f} img/s | {record['seconds']:.1f} s")

    # ------------------------------------------------------------------- collectives and checkpoints
    def _test_stop(self) -> bool:
        return bool(self.stop_after_steps and self.global_done >= self.stop_after_steps)

    def _agree_stop(self, local: int) -> int:
        """The stop signal number agreed by all ranks (0 = go on): every rank stops at the same step."""
        return int(bdist.reduce_max([float(local)], self.dinfo, self.device)[0])

    def _fold(self) -> None:
        """Add this stretch's (rank-summed) loss, images, skipped steps and time to the epoch accumulators."""
        m = self.meter
        sums = torch.stack([m.loss_sum, m.seen])
        bdist.all_reduce_sum(sums, self.dinfo)
        loss, images = sums.tolist()
        self.acc["loss"] += loss
        self.acc["images"] += int(images)
        self.acc["skipped"] += int(m.skipped)
        self.acc["seconds"] += time.perf_counter() - self.t_train

    def _epoch_wall(self) -> float:
        """Wall seconds of the current epoch so far, the attempts before a resume included."""
        return self.acc.get("wall", 0.0) + time.perf_counter() - self.t_epoch

    def _state(self, epoch: int, step: int) -> dict:
        t = self.t
        return {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
                "scaler": t.scaler.state_dict() if t.scaler.is_enabled() else {},
                "ema": t.ema.state_dict() if t.ema is not None else {},
                "lookahead": t.lookahead.state_dict() if t.lookahead is not None else {},
                "epoch": epoch, "step": step, "global_step": epoch * self.steps + step,
                "epoch_acc": dict(self.acc, wall=self._epoch_wall()), "recipe": brecipe.to_dict(self.r),
                "num_classes": t.data.num_classes, "in_channels": t.data.in_channels,
                "classes": list(t.data.classes), "rng": {"torch": torch.get_rng_state()}}

    def _checkpoint(self, epoch: int, step: int) -> Path | None:
        """A collective: every rank checks the weights, rank 0 writes, every rank learns the outcome."""
        gstep = epoch * self.steps + step
        bad = _nonfinite(self.t.model, self.t.ema)
        if bdist.reduce_max([1.0 if bad else 0.0], self.dinfo, self.device)[0] > 0:
            raise NonFiniteLoss(f"weights became non-finite ({bad or 'on another rank'}) by global step {gstep} "
                                f"(epoch {epoch + 1 if step else epoch} step {step or self.steps}); "
                                f"no checkpoint written")
        path, err = None, None
        if self.dinfo.is_main:
            try:
                path = save_checkpoint(self.out, self._state(epoch, step), gstep, self.r.train.keep_checkpoints)
            except (errors.CheckpointError, CheckpointWriteError) as e:
                if not self.dinfo.enabled:
                    raise
                err = e
        if self.dinfo.enabled:
            msg = bdist.broadcast_object(str(err) if err is not None else "", self.dinfo)
            if err is not None:
                raise err
            if msg:
                raise CheckpointWriteError(f"on rank 0: {msg}")
        return path

