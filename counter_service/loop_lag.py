"""Event-loop lag: how late the loop wakes a sleeping task, which every callback suffers."""

from __future__ import annotations

import asyncio
from collections import deque

from counter_service.stats import percentile
from counter_service.tasks import BackgroundTask


class LoopLag:
    """Samples the lag every `interval` seconds and keeps the last `window` samples."""

    def __init__(self, interval: float = 0.1, window: int = 600) -> None:
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._task = BackgroundTask("loop-lag", self._run)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def record(self, lag_s: float) -> None:
        self._samples.append(max(0.0, lag_s))

    def summary_ms(self) -> dict[str, float]:
        """p50, p99 and max of the window, in milliseconds."""
        samples = sorted(self._samples) or [0.0]
        return {
            "p50": round(percentile(samples, 50) * 1000, 3),
            "p99": round(percentile(samples, 99) * 1000, 3),
            "max": round(samples[-1] * 1000, 3),
            "samples": len(self._samples),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            self.record(loop.time() - started - self._interval)
