"""Event-loop helpers the asynchronous unit tests share."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable


async def until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Yield to the loop until `predicate` holds; fail the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    for _ in itertools.count():
        if predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still false after {timeout_s}s")
        await asyncio.sleep(0)


async def settle(rounds: int = 50) -> None:
    """Let every ready task run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)
