"""Keeping the simulated chain durable: group commits, and answers that wait only when needed.

A real chain never reports a transaction that a crash could undo. The simulated chain's state
lives in memory and is saved to a store; `ChainJournal` saves what changed (concurrent callers
share one save) and tells a caller whether what it is about to report is saved already, so a
status poll waits for a save only when it reports a landing that is not durable yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from gateways.simulated.chain import ChainChanges, ChainRows, SimChain


class ChainJournal:
    """Save a `SimChain`'s changes through `save`, one save at a time, in order."""

    def __init__(self, chain: SimChain, save: Callable[[ChainRows], Awaitable[None]]) -> None:
        self._chain = chain
        self._save = save
        self._lock = asyncio.Lock()
        self._unsaved: ChainChanges | None = None  # taken, not saved: a save failed
        self._saving: ChainChanges | None = None  # taken, being saved
        self._changed = 0  # generation of the newest persist request
        self._saved = 0  # generation covered by the last successful save

    def durable(self, signatures: Iterable[str] = (), blockhashes: Iterable[str] = ()) -> bool:
        """Return True if these transactions' and blockhashes' current states are saved."""
        signatures, blockhashes = list(signatures), list(blockhashes)
        if self._chain.changed(signatures, blockhashes):
            return False
        return not any(
            any(s in taken.transactions for s in signatures)
            or any(b in taken.blockhashes for b in blockhashes)
            for taken in (self._saving, self._unsaved) if taken is not None)

    async def persist(self) -> None:
        """Return once every change made so far is saved; concurrent callers share a save."""
        if not self._chain.has_changes() and self._saving is None and self._unsaved is None:
            return  # everything is saved already
        self._changed += 1
        wanted = self._changed
        async with self._lock:
            if self._saved >= wanted:
                return  # a save that started after this call covered it
            covered = self._changed
            changes = self._chain.take_changes()
            if self._unsaved is not None:
                changes = self._unsaved.merged(changes)
            self._unsaved, self._saving = None, changes
            try:
                await self._save(changes.as_rows())
            except BaseException:
                self._unsaved = changes  # kept for the next save
                raise
            finally:
                self._saving = None
            self._saved = covered

    async def persist_unless_durable(self, signatures: Iterable[str] = (),
                                     blockhashes: Iterable[str] = ()) -> None:
        """Wait for a save only if these transactions or blockhashes are not saved yet."""
        if not self.durable(signatures, blockhashes):
            await self.persist()
