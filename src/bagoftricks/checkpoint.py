"""The checkpoint format, written and read here only: atomic writes, a 'latest' pointer, safe rotation.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
into place, so a file under a final name is always complete. The pointer file ``latest`` is
replaced the same way, only after its target is complete; old checkpoints are deleted only after
that. Every checkpoint holds plain tensors and containers, so ``torch.load(weights_only=True)``
reads it.

A checkpoint is a dict: "model" (the state dict), "recipe" (the resolved recipe as a dict), "num_classes",
"in_channels", "classes", the position ("epoch", "step", "global_step"), and what a run needs to
continue ("optimizer", "scaler", "ema", "lookahead", "epoch_acc", "rng"; transfer runs add "task").
`read_checkpoint` is the one place a checkpoint's weights are chosen (raw or EMA); the engine turns
them into a model (`engine.derive.model_from_checkpoint`), `models.pretrained` loads them into one.
Nothing here imports the engine, the models or the recipe.
"""
from __future__ import annotations

import errno
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

from bagoftricks.errors import CheckpointError, CheckpointWriteError
from bagoftricks.files import atomic_write, atomic_write_text

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{9})\.pt$")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: torch.save reports a failed file write as a RuntimeError whose
    context is the OSError the file object raised."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _reason(e: OSError) -> str:
    return "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temp file + rename; on any error (ENOSPC...) nothing is left behind and a
    CheckpointWriteError names the file."""
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except Exception as e:
        ose = _os_error(e)
        if ose is not None:
            raise CheckpointWriteError(f"could not write checkpoint {path}: {_reason(ose)}") from e
        raise


def checkpoint_path(run_dir: Path, global_step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step-{global_step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints under their final names, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def damage(path: Path) -> str | None:
    """What is wrong with a checkpoint file, seen from its bytes alone (None: nothing visible)."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        return f"is not a checkpoint (not a file written by torch.save: it starts with {head!r})"
    if not zipfile.is_zipfile(path):
        return f"is truncated ({size} bytes, the end of the archive is missing)"
    return None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint's state, read with weights_only=True; a CheckpointError that names the file and
    says what is wrong with it (missing, empty, truncated, not a checkpoint) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    wrong = damage(path)
    if wrong is None:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:  # torch's own message advises weights_only=False: unsafe, not repeated
            wrong = "is not a bagoftricks checkpoint (it holds Python objects other than tensors; not unpickled)"
        except Exception as e:  # noqa: BLE001 - a damaged archive fails in many ways
            first = str(e).splitlines()[0] if str(e) else ""
            wrong = f"is damaged ({type(e).__name__}: {first})"
    if wrong is not None:
        raise CheckpointError(f"checkpoint {path} {wrong}")
    if not isinstance(state, dict) or "model" not in state or "recipe" not in state:
        raise CheckpointError(f"checkpoint {path} is not a bagoftricks checkpoint (no model/recipe entries)")
    return state


def ema_weights(state: dict) -> dict | None:
    """The EMA weights of a checkpoint as a model state dict, or None when the run had no EMA."""
    ema = state.get("ema") or {}
    if not ema.get("params"):
        return None
    return {**ema.get("buffers", {}), **ema["params"]}  # BN running statistics are buffers


class Checkpoint(NamedTuple):
    """A checkpoint read from disk, with the weights chosen by `read_checkpoint`."""
    path: Path                       # the file
    state: dict                      # everything it holds (see the module docstring)
    weights: dict[str, torch.Tensor]  # the model state dict chosen: raw or EMA
    ema: bool                        # whether `weights` are the EMA weights

    @property
    def which(self) -> str:
        """For a log line: which weights of which file."""
        if self.ema:
            return f"EMA weights of {self.path.name}"
        kept = " (the run also kept EMA weights)" if ema_weights(self.state) is not None else ", the run kept no EMA"
        return f"raw weights of {self.path.name}{kept}"


def read_checkpoint(path: str | Path, ema: bool | None = False, map_location="cpu") -> Checkpoint:
    """A checkpoint file, or a run folder's newest valid checkpoint, with the weights to use.

    ema=False (the default, what evaluation, export and predict read unless asked): the raw weights.
    ema=True: the EMA weights; a CheckpointError when the run kept none (tricks.ema_decay 0).
    ema=None: the EMA weights when the run kept them, else the raw ones (a distillation teacher and
    model.pretrained: the averaged weights are the better start when there are any).
    """
    file = resolve_checkpoint(path)
    state = load_checkpoint(file, map_location)
    averaged = ema_weights(state) if ema is not False else None
    if ema is True and averaged is None:
        raise CheckpointError(f"{file} holds no EMA weights (the run's tricks.ema_decay was 0)")
    if averaged is not None:
        return Checkpoint(file, state, averaged, True)
    return Checkpoint(file, state, state["model"], False)


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temp files left by a writer that was killed mid-write (one writer per run folder)."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            try:
                p.unlink()
            except OSError:
                pass


def save_checkpoint(run_dir: Path, state: dict, global_step: int, keep: int) -> Path:
    """Write step-N.pt atomically, point 'latest' at it, then delete all but the newest `keep`.

    A kill at any moment leaves every step-N.pt complete and 'latest' naming a complete one: the
    new file is renamed into place only after an fsync, 'latest' is replaced (atomically) only
    after that, and older checkpoints are deleted only after 'latest' names the new one. A failed
    write (disk full) raises CheckpointWriteError naming the file and leaves the previous state.
    """
    remove_stale_temp_files(run_dir)
    path = checkpoint_path(run_dir, global_step)
    atomic_torch_save(state, path)
    latest = path.parent / "latest"
    try:
        atomic_write_text(latest, path.name + "\n")
    except OSError as e:
        raise CheckpointWriteError(f"could not write checkpoint pointer {latest} (checkpoint {path} "
                                   f"is complete): {_reason(e)}") from e
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != path:
            try:
                old.unlink()
            except OSError:
                pass
    return path


def newest_valid_checkpoint(run_dir: Path, map_location="cpu",
                            skipped: list | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, as (path, state), or None when none does.

    The newer ones that do not load are appended to `skipped` as (path, message) when it is given
    (the caller reports them); otherwise each is a warning that names the older file used instead.
    """
    bad: list = []
    found = None
    for path in reversed(list_checkpoints(run_dir)):  # complete by construction (rename after fsync)
        try:
            found = path, load_checkpoint(path, map_location)
            break
        except CheckpointError as e:
            bad.append((path, str(e)))
    if skipped is not None:
        skipped.extend(bad)
    elif found is not None:
        for _, msg in bad:
            warnings.warn(f"{msg}; using the older {found[0].name}", stacklevel=2)
    return found


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder meaning its newest valid checkpoint (a warning names each
    newer one that does not load)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_dir():
        return p
    bad: list = []
    found = newest_valid_checkpoint(p, skipped=bad)
    if found is None:
        if not bad:
            raise CheckpointError(f"no checkpoint in {p} (nothing in {p / CKPT_DIR}; is it a run folder?)")
        more = f" (and {len(bad) - 1} older unreadable)" if len(bad) > 1 else ""
        raise CheckpointError(f"no valid checkpoint in run folder {p}: {bad[0][1]}{more}")
    for _, msg in bad:
        warnings.warn(f"{msg}; using the older {found[0].name}", stacklevel=2)
    return found[0]
