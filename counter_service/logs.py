"""Warnings an operator can read: a burst of identical ones becomes one line and a count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WINDOW_S = 10.0


@dataclass
class _Window:
    """One kind's current window: when it began, and what it held back since."""

    start: float
    held: int = 0
    latest: str = ""
    timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop | None = None
    """The loop `timer` runs on."""


class SummarizedWarnings:
    """Logs the first warning of each kind at once, then, at the end of each fixed
    `window_s` in which more came, one line: the latest of them and how many there
    were. The kind is the caller's key (e.g. the reason a click failed), never the
    details that vary between repeats.

    Call it on the event loop's thread: a window's summary is flushed by a timer on
    the running loop, so a burst that stops is still counted. Without a running loop
    the summary waits for the next warning of its kind (or `flush()`)."""

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        """Log `message % args` unless a warning of `kind` was logged in this window;
        then it is counted into the window's summary."""
        now = self._clock()
        self._close_ended(kind, now)
        window = self._windows.get(kind)
        if window is None:
            self._windows[kind] = _Window(now)
            self._logger.warning(message, *args)
            return
        window.held += 1
        window.latest = message % args if args else message
        self._schedule_end(kind, window, now)

    def flush(self) -> None:
        """Log the summary of every open window now (at shutdown, say)."""
        for kind in list(self._windows):
            self._close(kind, next_start=None)

    def _close_ended(self, kind: str, now: float) -> None:
        # Its timer did not run (no loop, or a loop that was blocked): windows that
        # ended meanwhile close now, each at its own end.
        while (window := self._windows.get(kind)) and now >= window.start + self._window_s:
            self._close(kind, next_start=window.start + self._window_s)

    def _schedule_end(self, kind: str, window: _Window, now: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: the next warning of the kind closes the window
        if window.timer is None or window.loop is not loop:  # (that loop may be gone)
            window.timer = loop.call_later(window.start + self._window_s - now, self._end, kind)
            window.loop = loop

    def _end(self, kind: str) -> None:
        window = self._windows.get(kind)
        if window is not None:
            self._close(kind, next_start=window.start + self._window_s)

    def _close(self, kind: str, next_start: float | None) -> None:
        window = self._windows.pop(kind)
        if window.timer is not None:
            window.timer.cancel()
        if window.held:
            self._logger.warning(
                "%s (%d more like it in the last %gs)", window.latest, window.held, self._window_s
            )
            if next_start is not None:  # still repeating: the next window counts on
                self._windows[kind] = _Window(next_start)
