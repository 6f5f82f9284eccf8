"""Waiting for sent transactions to land: one status call per venue per poll round."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.errors import reason
from core.quotes import TxStatus
from gateways.base import VenueGateway

log = logging.getLogger(__name__)

MAX_SIGNATURES_PER_CALL = 256  # Solana's getSignatureStatuses limit


class LandingWatcher:
    """Wait for many signatures to land with one status call per venue per poll round.

    The engine's counterpart of Solana's `signatureSubscribe`: an order waiting for its
    swap costs nothing until the swap lands, however many wait, because one loop asks each
    venue about every pending signature at once, every `poll_s`.
    """

    def __init__(self, poll_s: float) -> None:
        self._poll = poll_s
        self._waiting: dict[str, tuple[VenueGateway, list[asyncio.Future[TxStatus]]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def watched(self) -> int:
        return len(self._waiting)

    async def wait(self, gateway: VenueGateway, signature: str, max_wait_s: float
                   ) -> TxStatus | None:
        """Return the signature's status once it landed, or None after `max_wait_s`."""
        future: asyncio.Future[TxStatus] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(signature, (gateway, []))[1].append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            async with asyncio.timeout(max_wait_s):
                return await future
        except TimeoutError:
            return None
        finally:
            entry = self._waiting.get(signature)
            if entry is not None:
                with contextlib.suppress(ValueError):
                    entry[1].remove(future)
                if not entry[1]:
                    del self._waiting[signature]

    async def _run(self) -> None:
        while self._waiting:
            by_venue: dict[str, tuple[VenueGateway, list[str]]] = {}
            for signature, (gateway, _) in self._waiting.items():
                by_venue.setdefault(gateway.name, (gateway, []))[1].append(signature)
            # getSignatureStatuses takes at most 256 signatures a call.
            await asyncio.gather(*(
                self._round(g, sigs[i:i + MAX_SIGNATURES_PER_CALL])
                for g, sigs in by_venue.values()
                for i in range(0, len(sigs), MAX_SIGNATURES_PER_CALL)
            ))
            await asyncio.sleep(self._poll)

    async def _round(self, gateway: VenueGateway, signatures: list[str]) -> None:
        try:
            statuses = await gateway.statuses(signatures)
        except Exception as exc:  # a failed lookup: the next round asks again
            log.info("status lookup of %d signatures at %s failed: %s", len(signatures),
                     gateway.name, reason(exc))
            return
        for signature, status in zip(signatures, statuses, strict=True):
            entry = self._waiting.get(signature)
            if status is None or not status.landed or entry is None:
                continue
            for future in entry[1]:
                if not future.done():
                    future.set_result(status)
