"""Event-loop lag: how late the loop wakes a sleeping task, which every callback suffers."""

from __future__ import annotations

import asyncio
import math
from collections import deque

from prometheus_client import Histogram

from counter_service.metrics import loop_lag_histogram
from counter_service.stats import percentile
from counter_service.tasks import BackgroundTask


class LoopLag:
    """Samples the lag every `interval` seconds into `histogram` (cumulative since start,
    so a client can diff two readings to get the lag of exactly the interval between
    them; by default one of its own), and keeps the last `window` samples for an exact
    summary. The loop is `lagging` once every sample for `sustained_s` was over
    `threshold_s`."""

    def __init__(
        self,
        histogram: Histogram | None = None,
        interval: float = 0.1,
        window: int = 600,
        threshold_s: float = 1.0,
        sustained_s: float = 10.0,
    ) -> None:
        self._histogram = histogram or loop_lag_histogram(None)
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._threshold_s = threshold_s
        self._sustained_s = sustained_s
        self._over_since: float | None = None
        self.task = BackgroundTask("loop-lag", self._run)
        """The sampler, for readiness to report if it is down."""

    def lagging_for(self, now: float) -> float:
        """Seconds every sample has been over the threshold, as of loop time `now`
        (0 if the last one was not)."""
        return 0.0 if self._over_since is None else now - self._over_since

    def lagging(self, now: float) -> bool:
        """True if the lag has been over the threshold for `sustained_s`, as of loop
        time `now`."""
        return self.lagging_for(now) >= self._sustained_s

    async def start(self) -> None:
        self.task.start()

    async def stop(self) -> None:
        await self.task.stop()

    def record(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self._samples.append(lag_s)
        self._histogram.observe(lag_s)

    def histogram(self) -> dict[str, object]:
        """The histogram in milliseconds: cumulative counts per bucket (`le_ms`, then
        +Inf) and the sum."""
        bounds: list[float] = []
        cumulative: list[int] = []
        total_s = 0.0
        for metric in self._histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    bounds.append(float(sample.labels["le"]) * 1000)
                    cumulative.append(int(sample.value))
                elif sample.name.endswith("_sum"):
                    total_s = sample.value
        finite = [round(b, 3) for b in bounds if not math.isinf(b)]
        return {"le_ms": finite, "cumulative": cumulative, "sum_ms": round(total_s * 1000, 3)}

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
            lag = loop.time() - started - self._interval
            self.record(lag)
            if lag <= self._threshold_s:
                self._over_since = None
            elif self._over_since is None:
                self._over_since = started  # late since the sleep began
