"""The run loop: one loop for every task, around the one training step.

`run_job` trains a `Job` into a run folder, epoch by epoch; `train` is it for a classification recipe
(`engine.setup.Training`), `transfer.loop.run_transfer` for detection and segmentation. Its parts:

    runfolder.plan_run        new run, continuation or already complete (rank 0 decides, every rank hears)
    signals.StopProtocol      SIGINT/SIGTERM (or the testing stop) agreed by every rank at a step boundary
    checkpointer              the checkpoint's content, written atomically by rank 0 as a collective
    console.progress_bar      the bar: epoch, step, loss, lr, img/s, ETA
    runfolder.RunLog          run.log and the console; TensorBoard; metrics.jsonl; final.json

The contract with a job is `Job` below: what the step trains, the batches of an epoch, its evaluation, and what
its run folder and checkpoints record. Everything the recipe's tricks do happens in the job's set-up and in its
`TrainStep`; the loop reads only train.* fields (and a budgeted run's `budget.Pace`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn

from bagoftricks import clock
from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.console import progress_bar, warnings_to
from bagoftricks.engine import budget
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import runfolder
from bagoftricks.engine.checkpointer import load_run_state, write_checkpoint
from bagoftricks.engine.derive import epoch_steps, precision_line, resolve_device, run_epochs, run_steps, scheduled_lr
from bagoftricks.engine.runfolder import Extends, RunPlan
from bagoftricks.engine.setup import setup_training
from bagoftricks.engine.signals import StopProtocol
from bagoftricks.engine.step import StepMeter, TrainStep
from bagoftricks.errors import TrainingInterrupted
from bagoftricks.files import append_jsonl, atomic_write_text, write_json
from bagoftricks.recipe import Recipe

__all__ = ["Extends", "Job", "run_job", "train"]


class Job(Protocol):
    """What a run trains (engine.setup.Training, transfer.job.TransferJob)."""
    recipe: Recipe
    device: torch.device
    dinfo: bdist.DistInfo
    model: nn.Module                   # the plain module: checkpoints, evaluation, EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: tricks.ModelEMA | None
    lookahead: tricks.Lookahead | None
    step: TrainStep
    steps_per_epoch: int

    def batches(self, epoch: int, first: int) -> Iterable[Any]:
        """The batches of epoch `epoch` from step `first` on, as `step` takes them."""

    def wrap(self) -> None:
        """Compile and/or wrap the model for DDP (after a checkpoint was loaded into it)."""

    def close(self) -> None:
        """Stop what runs beside the process for it (DataLoader workers); the job is not used after this."""

    def evaluate(self) -> dict:
        """The end-of-epoch scores (val_top1 ..., map_50 ..., miou ...)."""

    def eval_seconds(self) -> float:
        """An estimate of one `evaluate()` (train.budget sizes runs with it), from a slice of the test split."""

    def describe(self) -> dict:
        """What a checkpoint records of the job beside the weights: num_classes, in_channels, classes (, task)."""

    def folder_record(self) -> dict:
        """What env.json records of the job beside the environment."""

    def summary(self) -> list[str]:
        """The run log's first lines about what is trained, and the warnings (prefixed 'warning: ')."""

    def skipped_samples(self) -> list[tuple[str, str, str]]:
        """(split, file, reason) of every sample the data readers skipped: logged and kept in skipped.json."""

    def scores(self, record: dict) -> str:
        """The epoch line's scores, e.g. ' | top-1 91.20 top-5 99.80'."""


def train(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
          stop_after_steps: int = 0, extends: Extends | None = None) -> dict:
    """Train classification recipe `r` into run folder `out_dir`; returns the final metrics record.

    resume=True continues from the newest valid checkpoint in out_dir (the folder's recipe is used).
    extends: a new run folder starts from another run's checkpoint (`engine.extend.extend_run`).
    progress: None = a progress bar on a terminal only, False = never. stop_after_steps (testing aid)
    stops the process's loop after that many global steps, with a checkpoint, as a signal would.

    Under torchrun (RANK/WORLD_SIZE set) the process group is joined first; rank 0 alone reads and
    writes the run folder and sends the checkpoint to the other ranks. A worker group restarted by
    torchrun (TORCHELASTIC_RESTART_COUNT > 0) resumes as with train.resume: auto.
    """
    def build(rr: Recipe, device: torch.device, dinfo: bdist.DistInfo, state: dict | None) -> Job:
        return setup_training(rr, device, dinfo, pretrained=state is None)  # a checkpoint holds the rest

    return run_job(r, out_dir, build, resume=resume, progress=progress, stop_after_steps=stop_after_steps,
                   extends=extends)


def run_job(r: Recipe, out_dir: str | Path, build: Callable[[Recipe, torch.device, bdist.DistInfo, dict | None], Job],
            *, resume: bool = False, progress: bool | None = None, stop_after_steps: int = 0,
            extends: Extends | None = None, validate: Callable[[Recipe], Recipe] = brecipe.validate,
            command: str = "train") -> dict:
    """Train the job that `build(recipe, device, dinfo, checkpoint or None)` makes into `out_dir` (see `train`).

    `validate` checks the recipe (and a continued run's own); `command` names the CLI command that
    continues the run, for the messages."""
    validate(r)
    origin = clock.run_origin()  # train.budget counts from here (the process's start on the command line)
    out = Path(out_dir)
    dinfo = bdist.from_env()
    auto = r.train.resume == "auto" or bdist.elastic_restart_count() > 0
    loop = job = None
    try:
        if dinfo.enabled:
            bdist.init(dinfo, resolve_device(r.train.device, dinfo.local_rank))
        plan = runfolder.plan_run(out, resume, auto, r, dinfo, extends)
        if plan.final is not None:
            if dinfo.is_main:
                hint = f"; to train it longer: bagoftricks train --resume {out} --epochs N --out NEW" \
                    if command == "train" else ""
                print(f"run folder {out} is already complete ({plan.epochs} epochs){hint}", flush=True)
            return plan.final
        if plan.state is not None:
            r = validate(brecipe.from_dict(plan.state["recipe"]))
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        device = resolve_device(r.train.device, dinfo.local_rank)
        bdist.init(dinfo, device)
        asked = {"train.precision": "auto"} if r.train.precision == "auto" else {}  # build resolves it; resumed: done
        job, pace = budget.build_sized(r, build, device, dinfo, plan.state, origin, out if extends is None else None)
        loop = RunLoop(job, out, progress, stop_after_steps, command, pace, asked)
        with warnings_to(loop.log.warning_line):  # library warnings go to run.log, one line each
            loop.start(plan, extends)
            record = loop.run()
        # Rank 0 still writes final.json when the others leave the loop: every rank leaves once the run is
        # complete on disk. Only a run that ended normally waits here: a rank that raised must not block in
        # a barrier its peers may never reach. (Finished workers that aborted at exit did so with the
        # process group's threads outliving train(): see distributed.init and .shutdown.)
        bdist.barrier(dinfo)
        return record
    finally:
        if job is not None:
            job.close()  # its loader's workers stop now: left to the garbage collector, 5 s each
        loop = job = None  # the DDP-wrapped model holds the process group: released here, freed at shutdown
        bdist.shutdown()


def _new_acc() -> dict:
    # seconds: training time of the epoch; wall: the epoch's wall time before this attempt (a resumed epoch)
    return {"loss": 0.0, "images": 0, "seconds": 0.0, "skipped": 0, "wall": 0.0}


class RunLoop:
    """One process's part of a run: `start` (checkpoint, folder, log), then `run` (the epochs)."""

    def __init__(self, job: Job, out: Path, progress: bool | None, stop_after_steps: int, command: str = "train",
                 pace: budget.Pace | None = None, asked: dict | None = None):
        self.t_start = self.t_epoch = self.t_train = time.perf_counter()
        self.pace = pace  # a budgeted run's re-sizes; its record (pace.record) goes to env.json and the log
        self.asked = asked or {}  # fields asked as "auto" that the run resolved (recipe.ASKED_FIELDS), for env.json
        self.job, self.r, self.out, self.dinfo = job, job.recipe, out, job.dinfo
        self.progress, self.command = progress, command
        self.steps = job.steps_per_epoch
        self.epochs = run_epochs(self.r, self.steps)  # train.epochs, or what train.steps needs
        self.stop = StopProtocol(self.dinfo, job.device, stop_after_steps)
        self.start_epoch, self.start_step = 0, 0
        self.acc = _new_acc()
        self.meter: StepMeter | None = None
        self.bar, self.bar_loss = None, "…"
        self.metrics_path = out / "metrics.jsonl"
        self.log = runfolder.RunLog(out / "run.log", self.dinfo)
        self.writer = None

    # ------------------------------------------------------------------------------------- set-up
    def start(self, plan: RunPlan, extends: Extends | None = None) -> None:
        """Load the checkpoint (if any), wrap the model, and prepare the run folder and its log."""
        state = plan.state
        if state is not None:
            load_run_state(self.job, state)
            self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
            self.acc = dict(state.get("epoch_acc", self.acc))
        self.job.wrap()
        if self.dinfo.is_main:
            self._write_folder(fresh=state is None or extends is not None, extends=extends)
        bdist.barrier(self.dinfo)
        if state is not None and extends is None and self.dinfo.is_main:
            self.t_start -= runfolder.earlier_attempts_wall(self.metrics_path, self.acc)
        if extends is not None:  # the new folder can be continued with --resume from the start
            self._checkpoint(self.start_epoch, 0)
        self.writer = runfolder.tensorboard(self.out / "tb") if self.dinfo.is_main else None
        self.log.log(f"run folder: {self.out}")
        for path, msg in plan.skipped:
            self.log.warn(f"{msg}; set aside as {Path(path).name}.corrupt, resuming from {Path(plan.ckpt).name}")
        if extends is not None:
            self.log.warn(f"extending the finished run {extends.run} ({self.start_epoch} epochs) to "
                          f"{self.epochs} epochs: from epoch {self.start_epoch + 1} on the lr schedule is "
                          f"recomputed for {self.epochs} epochs, so this is no longer a single-schedule run "
                          f"(recipe.yaml: schedule.extended_from {list(self.r.schedule.extended_from)})")
        elif state is not None:
            self.log.log(f"resumed from {plan.ckpt} at epoch {self.start_epoch + 1}, step {self.start_step}")
        if self.pace is not None or self.r.train.steps:
            self.log.log(budget.length_line(self.r, self.steps, self.pace, resumed=state is not None))
        if self.asked:  # train.precision: auto, resolved
            self.log.log(precision_line(self.r.train.precision, self.job.device))
        for line in self.job.summary():
            if line.startswith("warning: "):
                self.log.warn(line[len("warning: "):])
            else:
                self.log.log(line)
        for line in runfolder.skipped_lines(self.job.skipped_samples()):
            self.log.warn(line)

    def _write_folder(self, fresh: bool, extends: Extends | None = None) -> None:
        out, r, job = self.out, self.r, self.job
        out.mkdir(parents=True, exist_ok=True)
        if not fresh:
            runfolder.truncate_metrics(self.metrics_path, self.start_epoch)
            return
        for stale in (self.metrics_path, out / "run.log", out / "final.json", out / runfolder.SKIPPED_FILE):
            stale.unlink(missing_ok=True)
        atomic_write_text(out / "recipe.yaml", brecipe.dump(r))
        skipped = job.skipped_samples()
        if skipped:
            write_json(out / runfolder.SKIPPED_FILE, runfolder.skipped_records(skipped))
        d = job.describe()
        write_json(out / "classes.json", list(d["classes"]) or [str(k) for k in range(d["num_classes"])])
        extra = {"steps_per_epoch": self.steps, "steps": run_steps(r, self.steps), **job.folder_record()}
        extra.update({k: v for k, v in (("budget", self.pace and self.pace.record), ("asked", self.asked)) if v})
        if extends is not None:  # its epochs so far are this run's first ones
            extra["extends"] = {"run": str(extends.run), "checkpoint": str(extends.checkpoint),
                                "epochs": self.start_epoch}
            runfolder.copy_metrics(extends.run / "metrics.jsonl", self.metrics_path, self.start_epoch)
        write_json(out / "env.json", runfolder.env_record(job.device, r.train.seed, self.dinfo.world_size, extra))

    # --------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        """The epochs from the start position to the run's end; then the last record, with the run's wall
        seconds, written to final.json (by the process that writes the folder)."""
        record: dict = {}
        with self.stop:
            epoch = self.start_epoch
            while epoch < self.epochs:  # a budget may re-size the run at an epoch's end
                self.t_epoch = time.perf_counter()
                lr = self._train_epoch(epoch)
                record = self._end_epoch(epoch, lr)
                epoch += 1
        if self.writer is not None:
            self.writer.close()
        record = dict(record, wall_seconds=time.perf_counter() - self.t_start, **budget.held(self.pace))
        if self.dinfo.is_main:
            write_json(self.out / "final.json", record)
        return record

    def _train_epoch(self, epoch: int) -> float:
        """The steps of one epoch (from the resumed step on); returns the last step's lr."""
        first = self.start_step if epoch == self.start_epoch else 0
        if first == 0:
            self.acc = _new_acc()
        self.job.step.module.train()
        tr = self.r.train
        self.n_steps = epoch_steps(self.r, epoch, self.steps)  # all, but in a partial last epoch (train.steps)
        self.bar = progress_bar(self.progress if self.dinfo.is_main else False, self.n_steps, first,
                                f"epoch {epoch + 1}/{self.epochs}")
        self.bar_loss = "…"  # until the first read-back, train.log_every_steps steps in
        self.meter = StepMeter(self.job.device, self.meter)
        self.t_train = time.perf_counter()
        lr = scheduled_lr(self.r, 0, self.steps, self.dinfo.world_size)
        for s, batch in enumerate(self.job.batches(epoch, first), start=first):
            res = self.job.step(batch, epoch, s)
            lr = res.lr
            self.meter.add(res, epoch * self.steps + s, tr.max_bad_steps)
            self.stop.count_step()
            self._after_step(epoch, s, lr)
            if s + 1 >= self.n_steps:  # its steps, as a budget's re-size within the epoch may have changed them
                break
        if self.bar is not None:
            self.bar.close()
        self._fold()
        return lr

    def _after_step(self, epoch: int, s: int, lr: float) -> None:
        """Read-back and progress, then the stop protocol and periodic checkpoints (collectives)."""
        tr = self.r.train
        last = s + 1 == self.n_steps
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
        test_stop = self.stop.test_stop()
        # ranks agree on a stop (a collective and a host read) every step on CPU, where a host read
        # costs nothing, and at the read-back steps on an accelerator; alone, every step
        agree = readback or test_stop or not self.dinfo.enabled or self.job.device.type == "cpu"
        stop_sig = self.stop.agreed() if agree else 0
        periodic = tr.checkpoint_every_steps and (epoch * self.steps + s + 1) % tr.checkpoint_every_steps == 0
        if self.pace is not None and not last and (epoch * self.steps + s + 1) % self.pace.every == 0:
            periodic = self._resize(epoch, s + 1) or periodic  # a re-size within the epoch is in a checkpoint there
        if stop_sig:
            self.stop.stopping()
        if (stop_sig or periodic) and not last:
            self._fold(restart=True)
            path = self._checkpoint(epoch, s + 1)
            if stop_sig:
                if self.bar is not None:
                    self.bar.close()
                self.log.log(f"stopping at epoch {epoch + 1} step {s + 1}; checkpoint {path}")
                raise TrainingInterrupted(stop_sig, path, epoch * self.steps + s + 1, self.command)

    def _end_epoch(self, epoch: int, lr: float) -> dict:
        """Evaluate, record and log the epoch, write its checkpoint, and stop here if a signal came."""
        tr = self.r.train
        acc = self.acc
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / max(acc["images"], 1)}
        if (epoch + 1) % tr.eval_every == 0 or epoch + 1 == self.epochs:
            record.update(self.job.evaluate())
        record.update(images_per_sec=acc["images"] / max(acc["seconds"], 1e-9), train_seconds=acc["seconds"],
                      seconds=self._epoch_wall(), skipped_steps=acc["skipped"])
        self._write_record(record, epoch)
        if self.pace is not None and epoch + 1 < self.epochs:
            self._resize(epoch, self.n_steps)  # before the checkpoint: a resume from it keeps the length it chose
        path = self._checkpoint(epoch + 1, 0)
        if epoch + 1 < self.epochs:
            # a signal during the last step or the evaluation: stop here, at the epoch boundary
            stop_sig = self.stop.agreed()
            if stop_sig:
                self.stop.stopping()
                self.log.log(f"stopping after epoch {epoch + 1}; checkpoint {path}")
                raise TrainingInterrupted(stop_sig, path, (epoch + 1) * self.steps, self.command)
        return record

    def _resize(self, epoch: int, steps: int) -> bool:
        """A budgeted run after `steps` steps of epoch `epoch`: its rest re-sized to its steps' speed (True)."""
        if within := steps < self.n_steps:  # its steps so far, with their time
            self._fold(restart=True)
        out = self.pace.resize(self.r, self.steps, epoch, steps, self.acc["seconds"], self.dinfo)
        if out is not None:
            self.r = self.job.recipe = out[0]
            self.job.step.use_recipe(self.r)
            self.epochs, self.n_steps = run_epochs(self.r, self.steps), epoch_steps(self.r, epoch, self.steps)
            if self.bar is not None and within:
                self.bar.total = self.n_steps
                self.bar.set_description(f"epoch {epoch + 1}/{self.epochs}", refresh=False)
            self.pace.record.setdefault("resized", []).append(out[1])
            if self.dinfo.is_main:
                runfolder.record_length(self.out, self.r, run_steps(self.r, self.steps), self.pace.record)
            self.log.log(budget.resize_line(out[1]))
        return out is not None

    def _write_record(self, record: dict, epoch: int) -> None:
        if self.dinfo.is_main:
            append_jsonl(self.metrics_path, record)
            if self.writer is not None:
                for k, v in record.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        self.writer.add_scalar(k, v, epoch + 1)
                self.writer.flush()
        self.log.log(f"epoch {epoch + 1}/{self.epochs} | loss {record['train_loss']:.4f} | "
                     f"lr {record['lr']:.4g}{self.job.scores(record)} | {record['images_per_sec']:.0f} img/s | "
                     f"{record['seconds']:.1f} s")

    # ------------------------------------------------------------------- collectives and checkpoints
    def _fold(self, restart: bool = False) -> None:
        """Check, then add this stretch's (rank-summed) loss, images, skipped steps, time to the epoch's sums."""
        m = self.meter
        m.raise_if_failed(self.steps)
        sums = torch.stack([m.loss_sum, m.seen])
        bdist.all_reduce_sum(sums, self.dinfo)
        loss, images = sums.tolist()
        self.acc["loss"] += loss
        self.acc["images"] += int(images)
        self.acc["skipped"] += int(m.skipped)
        self.acc["seconds"] += time.perf_counter() - self.t_train
        if restart:  # within an epoch: a new stretch begins
            self.meter, self.t_train = StepMeter(self.job.device, m), time.perf_counter()

    def _epoch_wall(self) -> float:
        """Wall seconds of the current epoch so far, the attempts before a resume included."""
        return self.acc.get("wall", 0.0) + time.perf_counter() - self.t_epoch

    def _checkpoint(self, epoch: int, step: int) -> Path | None:
        gstep = min(epoch * self.steps + step, run_steps(self.r, self.steps))  # a partial last epoch ends early
        acc = dict(self.acc, wall=self._epoch_wall(), **budget.held(self.pace))  # a resume goes on from it
        return write_checkpoint(self.job, self.out, epoch, step, gstep, acc)
