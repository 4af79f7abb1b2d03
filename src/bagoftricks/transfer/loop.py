"""`run_transfer`: a transfer recipe trained into a run folder, with the engine's machinery.

The run folder is the one `bagoftricks train` writes (engine.runfolder: recipe.yaml, env.json,
metrics.jsonl with map_50/map or miou/pixel_acc per evaluated epoch, tb/, run.log, final.json), its
checkpoints are engine.checkpoint's (atomic, rotated, `latest`), SIGINT/SIGTERM are engine.signals'
(a checkpoint at the next step boundary, then exit 128+N) and the progress bar is the engine's. A
checkpoint holds the model, the optimizer and the position; since step (e, s) seeds torch's generator
from (seed, e, s) and epoch e's order comes from (seed, e), a resumed run is bit-exact on CPU.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from bagoftricks import recipe as brecipe
from bagoftricks.console import warnings_to
from bagoftricks.engine import runfolder
from bagoftricks.engine.checkpoint import save_checkpoint
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.engine.loop import _progress, run_epochs
from bagoftricks.engine.setup import resolve_device
from bagoftricks.errors import NonFiniteLoss, TrainingInterrupted
from bagoftricks.files import append_jsonl, atomic_write_text, read_json_object, write_json
from bagoftricks.recipe import Recipe
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.evaluate import evaluate_transfer
from bagoftricks.transfer.job import Job, check_transfer, setup_transfer


def run_transfer(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
                 stop_after_steps: int = 0) -> dict:
    """Train transfer recipe `r` into `out_dir` (resume=True: continue it); returns the final record.
    stop_after_steps (testing aid) stops after that many steps with a checkpoint, as a signal would."""
    check_transfer(r)
    out = Path(out_dir)
    ckpt, state = runfolder.prepare_run_folder(out, resume, r.train.resume == "auto", requested=r)
    if state is not None:
        r = check_transfer(brecipe.from_dict(state["recipe"]))
        if int(state["epoch"]) >= r.train.epochs:
            print(f"run folder {out} is already complete ({r.train.epochs} epochs)", flush=True)
            return read_json_object(out / "final.json")
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    channels = int(state["in_channels"]) if state is not None else 0
    job = setup_transfer(r, resolve_device(r.train.device), load_backbone=state is None, channels=channels)
    run = _TransferRun(job, out, progress, stop_after_steps)
    with warnings_to(run.log.warning_line):
        run.start(ckpt, state)
        return run.loop()


def _new_acc() -> dict:
    return {"loss": 0.0, "images": 0, "seconds": 0.0, "wall": 0.0}


class _TransferRun:
    """The epoch loop of one transfer run, its checkpoints and its stop protocol."""

    def __init__(self, job: Job, out: Path, progress: bool | None, stop_after_steps: int):
        self.job, self.r, self.out = job, job.recipe, out
        self.progress, self.stop_after_steps = progress, stop_after_steps
        self.steps = job.steps_per_epoch
        self.start_epoch = self.start_step = self.done = 0
        self.acc = _new_acc()
        self.log = runfolder.RunLog(out / "run.log", DistInfo())
        self.t_start = time.perf_counter()

    def start(self, ckpt: Path | None, state: dict | None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if state is None:
            for stale in ("metrics.jsonl", "run.log", "final.json"):
                (self.out / stale).unlink(missing_ok=True)
            atomic_write_text(self.out / "recipe.yaml", brecipe.dump(self.r))
            extra = {"task": self.r.transfer.task, "steps_per_epoch": self.steps, "classes": self.job.train.classes,
                     "pretrained": self.r.model.pretrained}
            write_json(self.out / "env.json", runfolder.env_record(self.job.device, self.r.train.seed, 1, extra))
        else:
            self.job.model.load_state_dict(state["model"])
            self.job.optimizer.load_state_dict(state["optimizer"])
            self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
            self.acc = dict(state.get("epoch_acc", self.acc))
            runfolder.truncate_metrics(self.out / "metrics.jsonl", self.start_epoch)
        self.writer = runfolder.tensorboard(self.out / "tb")
        r = self.r
        self.log.log(f"run folder: {self.out}")
        if state is not None:
            self.log.log(f"resumed from {ckpt} at epoch {self.start_epoch + 1}, step {self.start_step}")
        if self.job.pretrained_note:
            self.log.log(self.job.pretrained_note)
        self.log.log(f"transfer {r.transfer.task} | backbone {r.model.arch}-{r.model.variant} "
                     f"({r.model.pretrained or 'from scratch'}) | data {r.data.name} ({len(self.job.train)} train, "
                     f"{len(self.job.test)} test, {self.job.train.num_classes} classes with the background) | "
                     f"batch {r.train.batch_size} | lr {r.optim.lr:g} (backbone x{r.transfer.backbone_lr_mult:g}) "
                     f"on {self.job.device}")

    def loop(self) -> dict:
        return run_epochs(self)

    def _train_epoch(self, epoch: int) -> float:
        first = self.start_step if epoch == self.start_epoch else 0
        if first == 0:
            self.acc = _new_acc()
        self.job.model.train()
        bar = _progress(self.progress, self.steps, first, f"epoch {epoch + 1}/{self.r.train.epochs}")
        order = tdata.epoch_order(len(self.job.train), self.r.train.seed, epoch)
        loss_sum, lr, t0 = torch.zeros((), device=self.job.device), 0.0, time.perf_counter()
        for s, idx in enumerate(tdata.batch_indices(order, self.r.train.batch_size, first), start=first):
            lr = self.job.set_lr(epoch * self.steps + s)
            loss = self.job.loss(*self.job.batch(idx, epoch, s))
            self.job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.job.optimizer.step()
            loss_sum += loss.detach() * len(idx)
            self.acc["images"] += len(idx)
            self.done += 1
            if (s + 1) % self.r.train.log_every_steps == 0 or s + 1 == self.steps:
                self._read_back(loss_sum, epoch, s, bar)
                loss_sum.zero_()
            if bar is not None:
                bar.update(1)
            self.acc["seconds"] += time.perf_counter() - t0
            self._after_step(epoch, s, bar)
            t0 = time.perf_counter()
        if bar is not None:
            bar.close()
        return lr

    def _read_back(self, loss_sum: torch.Tensor, epoch: int, s: int, bar) -> None:
        total = float(loss_sum)
        if not math.isfinite(total):
            raise NonFiniteLoss(f"the loss is not finite at epoch {epoch + 1} step {s + 1}; no checkpoint written")
        self.acc["loss"] += total
        if bar is not None:
            bar.set_postfix_str(f"loss {self.acc['loss'] / max(self.acc['images'], 1):.4f}")

    def _after_step(self, epoch: int, s: int, bar) -> None:
        """The stop protocol (a signal or the test stop) and the periodic checkpoints."""
        if s + 1 == self.steps:
            return  # the epoch's end writes its checkpoint and looks at the stop flag
        gstep = epoch * self.steps + s + 1
        every = self.r.train.checkpoint_every_steps
        stop_sig = self.stop.signum or (15 if self.stop_after_steps and self.done >= self.stop_after_steps else 0)
        if stop_sig or (every and gstep % every == 0):
            path = self._checkpoint(epoch, s + 1)
            if stop_sig:
                self.stop.stopping = True
                if bar is not None:
                    bar.close()
                self.log.log(f"stopping at epoch {epoch + 1} step {s + 1}; checkpoint {path}")
                raise _interrupted(stop_sig, path, gstep)

    def _end_epoch(self, epoch: int, lr: float) -> dict:
        r = self.r
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": self.acc["loss"] / max(self.acc["images"], 1)}
        if (epoch + 1) % r.train.eval_every == 0 or epoch + 1 == r.train.epochs:
            record.update(evaluate_transfer(self.job))
        wall = self.acc["wall"] + time.perf_counter() - self.t_epoch
        record.update(images_per_sec=self.acc["images"] / max(self.acc["seconds"], 1e-9),
                      train_seconds=self.acc["seconds"], seconds=wall)
        self._write_record(record, epoch)
        path = self._checkpoint(epoch + 1, 0)
        stop_sig = self.stop.signum or (15 if self.stop_after_steps and self.done >= self.stop_after_steps else 0)
        if stop_sig and epoch + 1 < r.train.epochs:
            self.stop.stopping = True
            self.log.log(f"stopping after epoch {epoch + 1}; checkpoint {path}")
            raise _interrupted(stop_sig, path, (epoch + 1) * self.steps)
        return record

    def _write_record(self, record: dict, epoch: int) -> None:
        append_jsonl(self.out / "metrics.jsonl", record)
        if self.writer is not None:
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, epoch + 1)
            self.writer.flush()
        scores = " | ".join(f"{k} {record[k]:.2f}" for k in ("map_50", "map", "miou", "pixel_acc") if k in record)
        self.log.log(f"epoch {epoch + 1}/{self.r.train.epochs} | loss {record['train_loss']:.4f} | "
                     f"lr {record['lr']:.4g}{' | ' + scores if scores else ''} | "
                     f"{record['images_per_sec']:.0f} img/s | {record['seconds']:.1f} s")

    def _checkpoint(self, epoch: int, step: int) -> Path:
        acc = dict(self.acc, wall=self.acc["wall"] + time.perf_counter() - self.t_epoch)
        state = {"model": self.job.model.state_dict(), "optimizer": self.job.optimizer.state_dict(),
                 "epoch": epoch, "step": step, "global_step": epoch * self.steps + step, "epoch_acc": acc,
                 "recipe": brecipe.to_dict(self.r), "task": self.r.transfer.task,
                 "classes": list(self.job.train.classes), "num_classes": self.job.train.num_classes,
                 "in_channels": self.job.channels}
        return save_checkpoint(self.out, state, epoch * self.steps + step, self.r.train.keep_checkpoints)


def _interrupted(signum: int, path: Path, gstep: int) -> TrainingInterrupted:
    e = TrainingInterrupted(signum, path, gstep)
    e.command = "transfer"  # the CLI's hint: `bagoftricks transfer --resume RUN`
    return e
