"""Ending asyncio work whose answer is no longer wanted, without hiding the caller's own end."""

from __future__ import annotations

import asyncio
from typing import Any


def _read_outcome(work: asyncio.Future[Any]) -> None:
    if not work.cancelled():
        work.exception()  # read: an error of unwanted work is dropped, never logged as lost


async def cancel_and_wait(*work: asyncio.Future[Any]) -> None:
    """Cancel `work` and wait until all of it has ended; its answers and errors are dropped.

    Only the caller's own cancellation comes out of this: if it is cancelled while the work
    winds down, it stops waiting and raises CancelledError at once (the work, cancelled
    already, ends by itself). Awaiting the cancelled work directly under
    `suppress(CancelledError)` would instead swallow that cancellation and go on as if it
    had never been asked for.
    """
    pending = set()
    for item in work:
        item.cancel()  # a no-op for work already done
        item.add_done_callback(_read_outcome)
        if not item.done():
            pending.add(item)
    if pending:  # work already done costs no turn of the loop
        await asyncio.wait(pending)  # never raises the work's errors; a CancelledError is ours
