"""Event-loop lag: how late the loop wakes a sleeping task, which every callback suffers."""

from __future__ import annotations

import asyncio
import bisect
from collections import deque

from counter_service.stats import percentile
from counter_service.tasks import BackgroundTask

# Histogram bucket upper bounds in ms (plus +Inf), as a Prometheus exporter would keep.
BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class LoopLag:
    """Samples the lag every `interval` seconds: the last `window` samples for a summary,
    and a cumulative histogram since start, so a client can diff two readings to get
    the lag distribution of exactly the interval between them."""

    def __init__(self, interval: float = 0.1, window: int = 600) -> None:
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._buckets = [0] * (len(BUCKETS_MS) + 1)
        self._sum_ms = 0.0
        self._task = BackgroundTask("loop-lag", self._run)

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def record(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self._samples.append(lag_s)
        self._buckets[bisect.bisect_left(BUCKETS_MS, lag_s * 1000)] += 1
        self._sum_ms += lag_s * 1000

    def histogram(self) -> dict[str, object]:
        """Cumulative counts per bucket (`le_ms`, then +Inf) since start, and the sum."""
        cumulative, running = [], 0
        for count in self._buckets:
            running += count
            cumulative.append(running)
        return {
            "le_ms": list(BUCKETS_MS),
            "cumulative": cumulative,
            "sum_ms": round(self._sum_ms, 3),
        }

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
