"""The one error type of neurmap, :class:`UsageError`, the helpers that keep an error's message to one line
(torch's advice to load untrusted pickles replaced by what it means, a DataLoader worker's wrapping removed),
and :func:`stoppable`, under which SIGTERM stops a job as Ctrl+C does. The library raises these; the commands
(:mod:`neurmap.cli`) print them and set the exit status."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator

__all__ = ["Stopped", "UsageError", "stoppable", "unwrap_worker_error", "without_unsafe_advice"]


class UsageError(ValueError):
    """A bad setting, override, path or value: the one error type of every command. The message is one line
    naming the key, file or value, what was expected and, where there is one, the fix."""


def without_unsafe_advice(text: str) -> str:
    """``text`` with torch's advice to re-run ``torch.load`` with ``weights_only=False`` (which runs whatever code
    a file holds) replaced by what it means: the file holds more than plain tensors."""
    start = text.find("Weights only load failed")
    if start < 0:
        return text
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|Check the documentation|$)", text[start:], re.S)
    reason = f": {' '.join(detail.group(1).split())}" if detail else ""
    return (
        f"{text[:start]}not a file of plain tensors{reason} (neurmap reads weights only, never pickled objects; "
        "check that the path names the checkpoint you meant)"
    )


def unwrap_worker_error(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (torch wraps it in
    ``Caught <Error> in DataLoader worker process N. Original Traceback ...``); other messages unchanged."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl+C would raise KeyboardInterrupt, so that both stop a command alike."""


def _raise_stopped(signum: int, frame: object) -> None:
    if signal.getsignal(signum) is _raise_stopped:  # else a handler that calls it (Lightning's) stops the run itself
        raise Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within it, SIGTERM raises :class:`Stopped` (a KeyboardInterrupt) in the main thread, as Ctrl+C does; while
    another handler has taken SIGTERM over and calls this one (Lightning's, during fit and test, which stops at the
    next batch), it leaves the stop to that handler."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
