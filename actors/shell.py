"""What every Ray shell shares: the actors' names, GC tuning, hot methods, resolved settings."""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError

from actors.wire import Handler, WireClient, WireServer
from core.errors import NotPermitted
from core.settings import Settings

CHAIN = "SimChain"
NOTIFIER = "Notifier"
MANAGER = "OrderManager"

F = TypeVar("F")

# What a call raises when the actor behind a handle died or cannot be reached (ActorDiedError
# and ActorUnavailableError are both RayActorErrors).
ACTOR_GONE = RayActorError


def database_url(settings: Settings) -> str:
    """Return the database URL (from the secrets file the launcher wrote, or the settings)."""
    url = _secrets(settings).get("database_url")
    if not url:
        raise RuntimeError("database_url must be resolved before actors start")
    return url


def wallet_secret(settings: Settings) -> str | None:
    """Return the wallet's secret key (None: the simulated set-up's ephemeral wallet)."""
    return _secrets(settings).get("wallet_keypair")


def rpc_endpoint(settings: Settings) -> str:
    """Return the Solana RPC URL (it may carry a provider's API key: kept with the secrets)."""
    return _secrets(settings).get("rpc_url") or settings.rpc_endpoint


def _secrets(settings: Settings) -> dict[str, str]:
    if settings.secrets_file is not None:
        loaded: dict[str, str] = json.loads(Path(settings.secrets_file).read_text())
        return loaded
    found = {"database_url": settings.database_url, "wallet_keypair": settings.wallet_keypair,
             "rpc_url": settings.rpc_url}
    return {k: v.get_secret_value() for k, v in found.items() if v is not None}


def require_test_hooks(settings: Settings, hook: str) -> None:
    """Refuse a fault-injection hook unless the stack was started with test hooks on."""
    if not settings.test_hooks:
        raise NotPermitted(f"{hook} is a test hook; start the stack with DEXEC_TEST_HOOKS=1")


def tune_gc() -> None:
    """Make Python's garbage collector cheap for a long-lived, allocation-heavy process.

    Measured in a worker at about 400 orders/s (gc.callbacks timing every collection):
    1.0-1.3 s of every 10 s went to collections, about 34 young, 3 middle and 0.3 full ones
    a second, with some 100,000 tracked objects, most of them left by Ray and the libraries
    at start-up. Freezing those takes them out of every later collection, and a larger first
    generation lets short-lived objects (an order's events, answers, futures) die by
    reference counting before a collection has to walk them. With both, no collection was
    recorded in the next 40 s run.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def hot(method: F) -> F:
    """Mark an actor method called for every order or every few milliseconds.

    Ray records a task event (shown in the dashboard's task list) for each call; for these
    methods that is millions of rows nobody reads and CPU on every call, so they keep none.
    The actors themselves, their logs and metrics stay in the dashboard.
    """
    decorate: Any = ray.method(enable_task_events=False)
    marked: F = decorate(method)
    return marked


def this_node() -> str:
    """This process's Ray node id."""
    node: str = ray.get_runtime_context().get_node_id()
    return node


class WireHost:
    """An actor's loopback wire (actors/wire.py): some of its methods, served on a port of
    its node to the processes there that ask the actor, over Ray, for the port and token
    (the actor derives from WireServed, whose `wire_address` answers with `address()`)."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._server = WireServer(handlers, secrets.token_bytes(32))
        self._port: int | None = None
        self._lock = asyncio.Lock()

    async def address(self) -> tuple[str, int, bytes]:
        """(the actor's node id, its wire's port, the wire's token); listens on first use."""
        async with self._lock:
            if self._port is None:
                self._port = await self._server.start()
        return this_node(), self._port, self._server.token


class WireServed:
    """Base of an actor that serves some of its methods on a WireHost kept in `_wire`."""

    _wire: WireHost

    async def wire_address(self) -> tuple[str, int, bytes]:
        """(this actor's node id, the port of its loopback wire, the wire's token)."""
        return await self._wire.address()


class WiredHandle:
    """A handle of an actor with a WireHost: its calls go over the actor's wire when the
    actor runs on this process's node (`node_id`), and as actor calls otherwise.

    A broken wire fails the calls on it with WireClosed (the actor died, or restarted with
    a new port and token); the next call asks the actor for its address again. Nothing is
    retried: the caller decides, as after an actor call that failed.
    """

    def __init__(self, handle: Any, node_id: str | None) -> None:
        self.handle = handle
        self._node_id = node_id  # this process's node (None: never the wire)
        self._wire: WireClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def call(self, method: str, *args: Any) -> Any:
        wire = await self.link()
        if wire is None:
            return await getattr(self.handle, method).remote(*args)
        return await wire.call(method, *args)

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """A streamed method's chunks (an async generator of the actor)."""
        wire = await self.link()
        if wire is not None:
            async for chunk in wire.stream(method, *args):
                yield chunk
            return
        async for ref in getattr(self.handle, method).remote(*args):
            yield await ref

    async def link(self) -> WireClient | None:
        """The wire to the actor when it runs on this node, connected anew after a break;
        None to call the actor instead."""
        if self._node_id is None:
            return None
        loop = asyncio.get_running_loop()
        wire = self._wire
        if wire is not None and not wire.closed and loop is self._loop:
            return wire
        if self._loop is not None and loop is not self._loop:
            return None  # a connection belongs to one event loop: another loop calls Ray
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._wire is None or self._wire.closed:
                node, port, token = await self.handle.wire_address.remote()
                if node != self._node_id:
                    self._node_id = None  # the actor is on another node: Ray from now on
                    return None
                self._wire, self._loop = WireClient("127.0.0.1", port, token), loop
            return self._wire
