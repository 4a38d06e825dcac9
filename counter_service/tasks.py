"""Supervised background tasks: started once, restarted after a crash, awaited on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from counter_service.backoff import Backoff

logger = logging.getLogger(__name__)

# A run that lasted this long before it crashed starts the backoff again from its base.
_HEALTHY_RUN_S = 10.0
# How often stop() repeats a cancellation that did not end the task.
_CANCEL_AGAIN_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every 0.1 s: on
    Python 3.11, `asyncio.wait_for` (which redis-py uses for socket writes) swallows a
    cancellation that arrives as its operation completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_AGAIN_S)
    await asyncio.gather(task, return_exceptions=True)


class BackgroundTask:
    """Runs `run()` as a task between `start()` and `stop()`.

    `run()` is meant to run until cancelled. If it raises (or returns), the error is
    logged at ERROR with its traceback and `run()` starts again after a backoff;
    meanwhile `up` is False, so readiness can say which task is down."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._backoff = backoff or Backoff(base=0.1, cap=10.0)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.up = False
        self.crashes = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`, crashed or not."""
        return self._task is not None

    def start(self) -> None:
        """Start the task unless it is already running."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has finished (its `finally` blocks ran),
        even if a library swallowed the cancellation (see `cancel_and_wait`)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            await cancel_and_wait(task)
        self.up = False

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self.up = True
            try:
                await self._run()
                error: BaseException = RuntimeError("returned instead of running until stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            self.up = False
            if self._stopping:
                return  # a lost cancellation surfaced as an error: stop() is waiting
            await self._after_crash(error, loop.time() - started)

    async def _after_crash(self, error: BaseException, ran_s: float) -> None:
        self.crashes += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if ran_s >= _HEALTHY_RUN_S:
            self._backoff.reset()
        delay = self._backoff.next_delay()
        logger.error(
            "background task %s crashed; restarting in %.2fs",
            self.name,
            delay,
            exc_info=(type(error), error, error.__traceback__),
        )
        await asyncio.sleep(delay)
