"""Running in the foreground until Ctrl-C or SIGTERM, as `counter-service balance` and
`counter-service up` do: status lines on stdout, errors on one line, SIGTERM taken as
Ctrl-C, and a teardown that a second signal cannot cut short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


def say(line: str) -> None:
    """One status line on stdout, flushed: it is read as it comes."""
    print(line, flush=True)


def one_line(exc: BaseException) -> str:
    """An error on one line: its first line and, after a log tail, the tail's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].rstrip(":")
    return first if len(lines) == 1 else f"{first}: {lines[-1]}"


def exit_status(code: int) -> str:
    """A child's exit code in words: "status 1", "killed by SIGKILL"."""
    if code >= 0:
        return f"status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the foreground work the way Ctrl-C does (KeyboardInterrupt)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """No second Ctrl-C or SIGTERM may cut the (bounded) teardown short."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in stops}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
