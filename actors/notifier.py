"""The Notifier actor (a thin shell over EventHub) and its two sides: workers publish through
NotifierSink, ingress replicas take their events through NotifierClient."""

from __future__ import annotations

from typing import Any

import ray

from actors.event_hub import Event, EventBatcher, EventHub
from actors.metrics import NotifierMetrics
from actors.shell import hot, tune_gc
from core.orders import OrderEvent


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
    def publish(self, events: list[Event]) -> None:
        self._metrics.published(len(events), dropped=self.hub.publish(events))

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
    """A worker's side: its events go to the Notifier in one call every few milliseconds."""

    def __init__(self, handle: Any) -> None:
        self._batcher = EventBatcher(self._send)
        self._h = handle

    async def _send(self, events: list[Event]) -> None:
        await self._h.publish.remote(events)

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
