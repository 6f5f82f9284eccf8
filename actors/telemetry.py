"""What the cores report for monitoring; the Ray shells export it to the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

_log = logging.getLogger("dexec.orders")


def order_log(order_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """Return a logger whose every line carries `order_id` as a structured field."""
    return logging.LoggerAdapter(_log, {"order_id": order_id})


class Metrics(Protocol):
    """Application metrics reported by the plain cores (no Ray import here)."""

    def order_submitted(self, order_type: str) -> None: ...

    def order_finished(self, status: str, venue: str, seconds: float) -> None: ...

    def stage(self, stage: str, seconds: float) -> None: ...

    def retry(self, error_class: str) -> None: ...

    def queue(self, waiting: int, executing: int, resting: int) -> None: ...


class NullMetrics:
    """Report nothing (unit tests, tools)."""

    def order_submitted(self, order_type: str) -> None:
        return None

    def order_finished(self, status: str, venue: str, seconds: float) -> None:
        return None

    def stage(self, stage: str, seconds: float) -> None:
        return None

    def retry(self, error_class: str) -> None:
        return None

    def queue(self, waiting: int, executing: int, resting: int) -> None:
        return None


# (site, calls, items, seconds the oldest item of each batch waited, seconds the calls took)
BatchSink = Callable[[str, int, int, float, float], None]


class BatchStats:
    """Sum up a process's batched calls per call site; hand the sums to `sink` every `every_s`.

    A Coalescer records each batch here (a few additions); the sums reach the metrics at
    most every `every_s`, so watching the batches costs no metric call per batch. From the
    exported totals: items / calls is the mean batch size, wait / calls the mean time the
    oldest item of a batch waited for it to leave, and call / calls the mean round trip.
    """

    def __init__(self, sink: BatchSink, *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._every = every_s
        self._clock = clock
        self._sums: dict[str, list[float]] = {}
        self._flushed = clock()
        self._timer: asyncio.TimerHandle | None = None

    def record(self, site: str, items: int, wait_s: float, call_s: float) -> None:
        sums = self._sums.get(site)
        if sums is None:
            sums = self._sums[site] = [0, 0, 0.0, 0.0]
        sums[0] += 1
        sums[1] += items
        sums[2] += wait_s
        sums[3] += call_s
        if self._clock() - self._flushed >= self._every:
            self.flush()
        elif self._timer is None:
            # Within `every_s` even if no batch follows: a burst then silence still shows.
            with contextlib.suppress(RuntimeError):  # no running loop: the next record does
                self._timer = asyncio.get_running_loop().call_later(self._every, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flushed = self._clock()
        sums, self._sums = self._sums, {}
        for site, (calls, items, wait_s, call_s) in sums.items():
            self._sink(site, int(calls), int(items), wait_s, call_s)
