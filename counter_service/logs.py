"""Warnings an operator can read: a burst of identical ones becomes one line and a count."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WINDOW_S = 10.0


@dataclass
class _Seen:
    first: float
    suppressed: int = 0


class SummarizedWarnings:
    """Logs the first warning of each kind at once, then at most one line per kind per
    `window_s` saying how many more there were; the kind is the caller's key (e.g. the
    reason a click failed), never the details that vary between repeats."""

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        """Log `message % args` unless a warning of `kind` was logged within the window."""
        now = self._clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen.first < self._window_s:
            seen.suppressed += 1
            return
        if seen is not None and seen.suppressed:
            message += " (and %d more like it in the last %.0fs)"
            args = (*args, seen.suppressed, now - seen.first)
        self._seen[kind] = _Seen(now)
        self._logger.warning(message, *args)
