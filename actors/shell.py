"""What every Ray shell shares: the actors' names, GC tuning, hot methods, resolved settings."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError

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
