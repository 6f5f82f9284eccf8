"""Status-event fan-out: the Notifier's core (EventHub) and the batching publishers use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from core.orders import TERMINAL

log = logging.getLogger(__name__)

Event = dict[str, Any]  # an OrderEvent's wire shape (OrderEvent.to_json)


class EventHub:
    """Route published events to the ingress replicas that watch their orders.

    Replicas long-poll `take`; each call returns every event queued for that replica since
    its last call, so one Ray call carries many events. A replica that stops polling for
    `stale_after_s` is forgotten.
    """

    def __init__(self, *, max_queue: int = 100_000, stale_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._watchers: dict[str, set[str]] = defaultdict(set)  # order_id -> replica ids
        self._queues: dict[str, deque[Event]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._last_seen: dict[str, float] = {}
        self._max_queue = max_queue
        self._stale_after = stale_after_s
        self._clock = clock
        self._first_watch = asyncio.Event()  # set by a watch; until_watched waits for it

    def watch(self, replica_id: str, order_ids: list[str]) -> None:
        self._touch(replica_id)
        for order_id in order_ids:
            self._watchers[order_id].add(replica_id)
        if self._watchers:
            self._first_watch.set()

    @property
    def watched(self) -> bool:
        """Whether any replica watches any order."""
        return bool(self._watchers)

    async def until_watched(self, timeout_s: float) -> bool:
        """Return True as soon as some order is watched; False if none is after `timeout_s`."""
        if not self._watchers:
            self._first_watch.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._first_watch.wait()
        return self.watched

    def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        for order_id in order_ids:
            replicas = self._watchers.get(order_id)
            if replicas is not None:
                replicas.discard(replica_id)
                if not replicas:
                    del self._watchers[order_id]

    def publish(self, events: list[Event]) -> int:
        """Queue each event for every replica watching its order; return how many
        deliveries were dropped because a replica's queue was full."""
        dropped = 0
        for event in events:
            replicas = self._watchers.get(event["order_id"])
            if not replicas:
                continue
            for replica_id in replicas:
                queue = self._queues.get(replica_id)
                if queue is None:
                    continue
                if len(queue) >= self._max_queue:
                    dropped += 1  # the replica's clients recover the gap from the DB
                    continue
                queue.append(event)
                self._ready[replica_id].set()
            if event.get("status") in TERMINAL:
                # Terminal: nothing more will come for this order.
                del self._watchers[event["order_id"]]
        return dropped

    async def take(self, replica_id: str, timeout_s: float) -> list[Event]:
        """Return the replica's queued events, waiting up to `timeout_s` for the first."""
        self._touch(replica_id)
        queue, ready = self._queues[replica_id], self._ready[replica_id]
        if not queue:
            ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await ready.wait()
        events = list(queue)
        queue.clear()
        self._forget_stale()
        return events

    def _touch(self, replica_id: str) -> None:
        self._last_seen[replica_id] = self._clock()
        if replica_id not in self._queues:
            self._queues[replica_id] = deque()
            self._ready[replica_id] = asyncio.Event()

    def _forget_stale(self) -> None:
        cutoff = self._clock() - self._stale_after
        for replica_id in [r for r, t in self._last_seen.items() if t < cutoff]:
            log.info("forgetting replica %s: it stopped polling", replica_id)
            del self._last_seen[replica_id], self._queues[replica_id], self._ready[replica_id]
            for order_id in list(self._watchers):
                self.unwatch(replica_id, [order_id])


class EventBatcher:
    """Collect events and hand them to `send` in batches, at most every `interval_s` (which
    its owner may change between batches; `wake` sends what is collected at once)."""

    def __init__(
        self, send: Callable[[list[Event]], Awaitable[None]], *, interval_s: float = 0.02,
        max_batch: int = 500,
    ) -> None:
        self._send = send
        self.interval_s = interval_s
        self._max_batch = max_batch
        self._buffer: list[Event] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, event: Event) -> None:
        self._buffer.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    def wake(self) -> None:
        """Send what is collected now rather than at the end of the interval."""
        if self._buffer:
            self._wake.set()

    async def _run(self) -> None:
        while self._buffer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            batch, self._buffer = self._buffer, []
            try:
                await self._send(batch)
            except Exception:
                log.exception("could not deliver %d events to the notifier", len(batch))
