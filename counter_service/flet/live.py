"""Live counters on pages: each page's counter Texts, and the process-wide fan-out.

Fan-out is the hot path: one coalesced update must reach every page of the process
that shows that counter. Pages are indexed by counter name, so an update costs one
direct patch per page that shows it (see `internals.send_value`), nothing for others.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import flet as ft

from counter_service.flet.internals import send_value
from counter_service.versions import CounterUpdate, LatestValues

logger = logging.getLogger(__name__)

PLACEHOLDER = "—"
"""What a counter Text shows while its value is unknown or the counter is broken."""


class LiveCounters:
    """The counter Texts of one page, each showing only newer states of its counter.

    `direct=False` pushes with Flet's `control.update()` instead: same result, more
    CPU; kept so benchmarks can compare both paths in one run."""

    def __init__(
        self,
        page: ft.Page,
        *,
        direct: bool = True,
        on_change: Callable[[CounterUpdate], None] | None = None,
    ) -> None:
        self._page = page
        self._direct = direct
        self._texts: dict[str, list[ft.Text]] = {}
        self._shown = LatestValues()
        self.on_change = on_change

    @property
    def names(self) -> list[str]:
        """The counters this page shows."""
        return list(self._texts)

    def bind(self, name: str, text: ft.Text) -> bool:
        """Show counter `name` in `text` from now on; True if the page did not show
        `name` before."""
        texts = self._texts.setdefault(name, [])
        if text not in texts:
            texts.append(text)
        if text.value is None or text.value == "":
            text.value = PLACEHOLDER
        return len(texts) == 1

    def unbind(self, name: str) -> None:
        """Stop showing counter `name` (its Texts keep their last value)."""
        self._texts.pop(name, None)
        self._shown.forget(name)

    def value(self, name: str) -> int | None:
        """The value this page shows for `name`, None if unknown or broken."""
        event = self._shown.get(name)
        return None if event is None else event.value

    def show(self, update: CounterUpdate) -> None:
        """Show `update` if it is newer than what is shown (or a reset)."""
        texts = self._texts.get(update.name)
        if texts is None or not self._shown.accept(update):
            return
        event = update.event
        value = PLACEHOLDER if event is None else str(event.value)
        connection = self._page.session.connection
        for text in texts:
            if connection is not None and self._direct:
                send_value(text, value, connection)  # the hot path: one patch per Text
            else:
                self._push(text, value, connection)
        if self.on_change is not None:
            try:
                self.on_change(update)
            except Exception:
                logger.exception("a page's counter change handler failed")

    def _push(self, text: ft.Text, value: str, connection: object) -> None:
        if connection is None:
            text.value = value  # away: the reconnect's full render carries it
        else:
            text.value = value
            # RuntimeError: not on the page yet; AttributeError: the socket just closed
            # (see internals.send_value). Either way a full render carries the value.
            with contextlib.suppress(RuntimeError, AttributeError):
                text.update()


class Fanout:
    """Every page's `LiveCounters` in this process, by counter name.

    `watch(name)`/`unwatch(name)` are told when the first page starts and the last
    page stops showing a counter, so the process keeps current exactly what its pages
    show. `deliver` is the service's delivery callback."""

    def __init__(self, watch: Callable[[str], None], unwatch: Callable[[str], None]) -> None:
        self._watch = watch
        self._unwatch = unwatch
        self._boards: dict[str, set[LiveCounters]] = {}
        self._pages: set[LiveCounters] = set()

    def add(self, board: LiveCounters, name: str) -> None:
        """`board` shows counter `name`."""
        boards = self._boards.setdefault(name, set())
        if board in boards:
            return
        boards.add(board)
        self._pages.add(board)
        if len(boards) == 1:
            self._watch(name)

    def remove(self, board: LiveCounters) -> None:
        """`board`'s page is gone: it shows nothing any more."""
        self._pages.discard(board)
        for name in board.names:
            boards = self._boards.get(name)
            if boards is None or board not in boards:
                continue
            boards.discard(board)
            if not boards:
                del self._boards[name]
                self._unwatch(name)

    def __len__(self) -> int:
        """The number of pages showing live counters."""
        return len(self._pages)

    def deliver(self, updates: list[CounterUpdate]) -> None:
        """Show each update on every page that shows its counter."""
        for update in updates:
            for board in tuple(self._boards.get(update.name, ())):
                board.show(update)
