"""Small file helpers every room shares: atomic writes and forgiving JSON / JSON-lines readers.

An atomic write goes to a temporary file in the target's folder, is flushed to disk and then renamed
over the target, so a file under its final name is always complete: a crash or a full disk leaves the
old file (or none), never half of a new one. Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it to `path`.

    Any exception (from `write`, the flush or the rename) removes the temporary file and propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty-printed JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | Path) -> dict:
    """The JSON object in `path`; {} when the file is missing, unreadable, malformed or not an object."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def read_jsonl(path: str | Path, skip_bad: bool = False) -> list:
    """The records of a JSON-lines file, up to the first line that does not parse.

    A process killed while appending leaves a torn last line; everything before it is good. With
    skip_bad, a line that does not parse is skipped and the lines after it still count (a file that
    was appended to again after a torn write). A missing or unreadable file is no records.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if not skip_bad:
                break
    return out


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record as a line and flush it to disk (a crash keeps every earlier line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
