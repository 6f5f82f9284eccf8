"""WebSocket fan-out inside one ingress replica: gapless, duplicate-free event streams.

Each subscription is made live before the order's state is read from the database, and
every event is delivered only if its seq is the next one the connection has seen; a gap is
filled from the database (events are written there before they are pushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from actors.batching import Coalescer
from core.orders import TERMINAL, Order, OrderEvent

log = logging.getLogger(__name__)

Frame = dict[str, Any]


class EventSource(Protocol):
    """The Notifier, as seen from a replica (actors.notifier.NotifierClient)."""

    async def watch(self, replica_id: str, order_ids: list[str]) -> None: ...

    async def unwatch(self, replica_id: str, order_ids: list[str]) -> None: ...

    async def take(self, replica_id: str, timeout_s: float) -> list[Frame]: ...


class History(Protocol):
    async def get_order(self, order_id: str, *, with_history: bool = True) -> Order | None: ...

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]: ...


class Outbox:
    """Frames waiting for a client to read them, at most `limit`.

    A client that falls that far behind is to be closed (1013: try again later) rather than
    grow the replica's memory; it resumes with `since_seq` and loses nothing.
    """

    def __init__(self, limit: int) -> None:
        self._frames: asyncio.Queue[Frame] = asyncio.Queue(maxsize=limit)
        self.overflowed = asyncio.Event()

    def put(self, frame: Frame) -> None:
        if self.overflowed.is_set():
            return
        try:
            self._frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def get(self) -> Frame:
        return await self._frames.get()


class Connection:
    """One client connection: an outbox drained by the route, plus per-order last seq."""

    def __init__(self, send: Callable[[Frame], Awaitable[None]]) -> None:
        self.send = send
        self.last_seq: dict[str, int] = {}
        self.lock = asyncio.Lock()


class StreamHub:
    """The replica's side of the Notifier: one long-poll loop feeding every connection."""

    def __init__(self, source: EventSource, history: History) -> None:
        self.replica_id = f"replica-{uuid.uuid4().hex[:12]}"
        self._source = source
        self._history = history
        self._subs: dict[str, set[Connection]] = defaultdict(set)
        self._poller: asyncio.Task[None] | None = None
        # Watches and unwatches travel in batches, one batch at a time, each order's side
        # decided when its batch leaves (watched if anyone here still wants it), so a late
        # unwatch can never cancel a newer subscription's watch.
        self._sync: Coalescer[str, None] = Coalescer(self._sync_many, max_in_flight=1)
        self.connections = 0

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def subscribe(
        self, conn: Connection, order_id: str, since_seq: int | None
    ) -> Order | None:
        """Stream the order's events after `since_seq` (None: send its current state first)."""
        self._ensure_poller()
        async with conn.lock:
            self._subs[order_id].add(conn)
            await self._sync(order_id)  # watched before the history is read: no gap
            order = await self._history.get_order(order_id)
            if order is None:
                self._drop(conn, order_id)
                return None
            if since_seq is None:
                conn.last_seq[order_id] = order.seq
            else:
                conn.last_seq[order_id] = since_seq
                for event in order.events:
                    if event.seq > since_seq:
                        await conn.send(event.to_json())
                        conn.last_seq[order_id] = event.seq
            if order.is_terminal:
                self._drop(conn, order_id)
        return order

    async def unsubscribe(self, conn: Connection, order_ids: list[str]) -> None:
        async with conn.lock:
            for order_id in order_ids:
                self._drop(conn, order_id)

    def close(self, conn: Connection) -> None:
        for order_id in list(conn.last_seq):
            self._drop(conn, order_id)

    def _drop(self, conn: Connection, order_id: str) -> None:
        conn.last_seq.pop(order_id, None)
        subs = self._subs.get(order_id)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[order_id]
                task = asyncio.get_running_loop().create_task(self._unwatch_if_unused(order_id))
                task.add_done_callback(_log_failure)

    async def _unwatch_if_unused(self, order_id: str) -> None:
        await self._sync(order_id)

    async def _sync_many(self, order_ids: list[str]) -> list[None]:
        """Tell the Notifier, for each order, whether this replica still watches it."""
        unique = list(dict.fromkeys(order_ids))
        watch = [i for i in unique if i in self._subs]
        unwatch = [i for i in unique if i not in self._subs]
        if watch:
            await self._source.watch(self.replica_id, watch)
        if unwatch:
            await self._source.unwatch(self.replica_id, unwatch)
        return [None] * len(order_ids)

    async def _poll(self) -> None:
        rewatch = False
        while True:
            try:
                if rewatch and self._subs:
                    # The Notifier restarted and forgot us: watch again, then fill gaps.
                    await self._source.watch(self.replica_id, list(self._subs))
                    for order_id in list(self._subs):
                        await self._catch_up(order_id)
                rewatch = False
                events = await self._source.take(self.replica_id, 5.0)
                for frame in events:
                    await self._deliver(frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Events taken but not delivered are not lost: the re-watch below fills
                # every subscription's gap from the database.
                log.warning("event poll or delivery failed (%s); retrying", exc)
                rewatch = True
                await asyncio.sleep(0.5)

    async def _deliver(self, frame: Frame) -> None:
        order_id = frame["order_id"]
        for conn in list(self._subs.get(order_id, ())):
            async with conn.lock:
                await self._deliver_to(conn, order_id, frame)

    async def _deliver_to(self, conn: Connection, order_id: str, frame: Frame) -> None:
        last = conn.last_seq.get(order_id)
        if last is None or frame["seq"] <= last:
            return
        if frame["seq"] > last + 1:
            for event in await self._history.events_since(order_id, last):
                if event.seq < frame["seq"]:
                    await conn.send(event.to_json())
        await conn.send(frame)
        conn.last_seq[order_id] = frame["seq"]
        if frame["status"] in TERMINAL:
            self._drop(conn, order_id)

    async def _catch_up(self, order_id: str) -> None:
        for conn in list(self._subs.get(order_id, ())):
            async with conn.lock:
                last = conn.last_seq.get(order_id)
                if last is None:
                    continue
                for event in await self._history.events_since(order_id, last):
                    await self._deliver_to(conn, order_id, event.to_json())


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if task.exception() is not None:
            log.warning("unwatch failed: %s", task.exception())
