"""Python warnings as one-line messages, so that no raw warning (with its source line) reaches the console.

The command line runs every command inside `routed_warnings()`: a warning becomes the line
``warning: <message>`` (its category is named unless it is a plain UserWarning) and goes to the
innermost sink opened with `warnings_to` — a training run's log (run.log and the console) while the
run is going — or to stderr. Which warnings are shown at all is still up to the `warnings` filters
(by default: once per place). Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator

_SINKS: list[Callable[[str], None]] = []


def warning_line(message: Warning | str, category: type[Warning]) -> str:
    """'warning: <first line of the message>' with the category named unless it is UserWarning."""
    lines = str(message).strip().splitlines()
    text = lines[0] if lines else ""
    return f"warning: {text}" if category is UserWarning else f"warning: {category.__name__}: {text}"


def _show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001 - showwarning's signature
    text = warning_line(message, category)
    if _SINKS:
        _SINKS[-1](text)
    else:
        print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def routed_warnings() -> Iterator[None]:
    """While the body runs, every warning shown is one line sent to the innermost sink (or stderr)."""
    old = warnings.showwarning
    warnings.showwarning = _show
    try:
        yield
    finally:
        warnings.showwarning = old


@contextlib.contextmanager
def warnings_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the routed warning lines to `sink` while the body runs (innermost sink wins)."""
    _SINKS.append(sink)
    try:
        yield
    finally:
        _SINKS.remove(sink)


def progress_bar(enabled: bool | None, total: int, initial: int, desc: str):
    """A tqdm bar of `total` steps on stderr, or None: enabled None = only on a terminal, False = never."""
    if enabled is False:
        return None
    from tqdm import tqdm
    disable = None if enabled is None else False  # None: tqdm shows it only on a terminal
    bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, leave=False,
               dynamic_ncols=True, file=sys.stderr)
    return None if bar.disable else bar
