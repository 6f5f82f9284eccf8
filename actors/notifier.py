"""The Notifier actor (a thin shell over EventHub) and its two sides: workers publish through
NotifierSink, ingress replicas take their events through NotifierClient."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from actors.event_hub import Event, EventBatcher, EventHub
from actors.metrics import NotifierMetrics
from actors.shell import hot, tune_gc
from core.errors import reason
from core.orders import OrderEvent

log = logging.getLogger(__name__)

PROMPT_INTERVAL_S = 0.02  # a worker's events go out this often while any order is watched
QUIET_INTERVAL_S = 0.25  # and this often while none is: nobody waits for them
WATCHED_POLL_S = 30.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Notifier:
    """Deliver status events to the ingress replicas that hold the WebSocket connections.

    It keeps nothing that must survive: a restarted Notifier is re-watched by every replica,
    which fills the gap from the database. Its calls are idempotent, so Ray may retry them.
    """

    def __init__(self) -> None:
        tune_gc()
        self.hub = EventHub()
        self._metrics = NotifierMetrics()

    @hot
    def publish(self, events: list[Event]) -> bool:
        """Deliver the events; answer whether any order is watched now."""
        self._metrics.published(len(events), dropped=self.hub.publish(events))
        return self.hub.watched

    @hot
    async def watched(self, timeout_s: float) -> bool:
        """Answer True as soon as any order is watched (at once if one is); False when none
        is after `timeout_s`. A quiet publisher waits on this to speak up again."""
        return await self.hub.until_watched(timeout_s)

    @hot
    def watch(self, replica_id: str, order_ids: list[str]) -> None:
        self.hub.watch(replica_id, order_ids)

    @hot
    def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        self.hub.unwatch(replica_id, order_ids)

    @hot
    async def take(self, replica_id: str, timeout_s: float) -> list[Event]:
        return await self.hub.take(replica_id, timeout_s)


class NotifierSink:
    """A worker's side: its events go to the Notifier in one call every few milliseconds.

    While no order is watched anywhere (no WebSocket client follows one: REST clients, a
    benchmark), nobody waits for the events, and they go out in larger batches, every
    QUIET_INTERVAL_S: each call costs both processes about a millisecond of CPU. A long poll
    (`watched`) tells the sink the moment an order is watched; it then sends what it holds
    at once and goes back to PROMPT_INTERVAL_S. Every event is still delivered, in order;
    a new follower reads the history first (serve/stream.py), so nothing is missed.
    """

    def __init__(self, handle: Any) -> None:
        self._batcher = EventBatcher(self._send, interval_s=PROMPT_INTERVAL_S)
        self._h = handle
        self._listening: asyncio.Task[None] | None = None

    @property
    def quiet(self) -> bool:
        return self._batcher.interval_s > PROMPT_INTERVAL_S

    async def _send(self, events: list[Event]) -> None:
        watched = await self._h.publish.remote(events)
        if watched is False and self._listening is None:
            self._batcher.interval_s = QUIET_INTERVAL_S
            self._listening = asyncio.get_running_loop().create_task(self._until_watched())

    async def _until_watched(self) -> None:
        try:
            while not await self._h.watched.remote(WATCHED_POLL_S):
                pass
        except Exception as exc:  # a Notifier restarting: prompt again until it answers
            log.info("waiting for watched orders failed: %s", reason(exc))
        finally:
            self._batcher.interval_s = PROMPT_INTERVAL_S
            self._batcher.wake()
            self._listening = None

    def publish(self, event: OrderEvent) -> None:
        self._batcher.add(event.to_json())


class NotifierClient:
    """A replica's side (serve.stream.EventSource): watch orders, long-poll their events."""

    def __init__(self, handle: Any) -> None:
        self._h = handle

    async def watch(self, replica_id: str, order_ids: list[str]) -> None:
        await self._h.watch.remote(replica_id, order_ids)

    async def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        await self._h.unwatch.remote(replica_id, order_ids)

    async def take(self, replica_id: str, timeout_s: float) -> list[Event]:
        events: list[Event] = await self._h.take.remote(replica_id, timeout_s)
        return events
