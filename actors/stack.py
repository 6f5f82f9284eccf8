"""Create and remove the named actors of one dexec stack (call from a driver on Ray)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import ray

from actors.notifier import Notifier
from actors.order_manager import OrderManager
from actors.shell import CHAIN, MANAGER, NOTIFIER
from actors.simulated_chain import SimulatedChain
from core.settings import Settings


@dataclass
class Stack:
    chain: Any
    notifier: Any
    manager: Any


def start_stack(settings: Settings) -> Stack:
    """Create (or find) every named actor and wait until each answers.

    The OrderManager creates the ExecutionWorkers itself (its pool follows the cluster).
    """
    common = {"namespace": settings.namespace, "get_if_exists": True, "lifetime": "detached"}
    chain = SimulatedChain.options(name=CHAIN, **common).remote(settings)  # type: ignore[attr-defined]
    notifier = Notifier.options(name=NOTIFIER, **common).remote()  # type: ignore[attr-defined]
    manager = OrderManager.options(  # type: ignore[attr-defined]
        name=MANAGER, max_concurrency=10_000, **common).remote(settings)
    ray.get(chain.block_height.remote())
    ray.get(manager.start.remote())
    ray.get([ray.get_actor(n, namespace=settings.namespace).ping.remote()
             for n in ray.get(manager.worker_names.remote())])
    return Stack(chain, notifier, manager)


def stop_stack(settings: Settings) -> None:
    """Kill every named actor in the stack's namespace (they are detached)."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == settings.namespace:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(entry["name"], namespace=settings.namespace),
                         no_restart=True)
