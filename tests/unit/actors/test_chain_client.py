"""The simulated chain's client: what it learns with a send saves the first status lookup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.simulated_chain import RayChainClient
from core.errors import VenueUnavailable
from core.quotes import TxStatus


class Method:
    """One method of a fake actor handle: `.remote(...)` records the call and answers."""

    def __init__(self, answer: Callable[..., Awaitable[Any]]) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Awaitable[Any]:
        self.calls.append(args)
        return self.answer(*args)


class FakeChain:
    """Landed at once: s1 confirmed; s2 still on its way; a send to `down` is refused."""

    def __init__(self) -> None:
        self.send_many = Method(self._send_many)
        self.signature_statuses = Method(self._statuses)
        self.latest_blockhash = Method(self._nothing)
        self.block_height = Method(self._nothing)
        self.quote_at_once = Method(self._nothing)

    @staticmethod
    async def _send_many(sends: list[tuple[str, bytes]]) -> tuple[list[Any], list[TxStatus]]:
        answers: list[Any] = [VenueUnavailable("down") if venue == "down" else tx.decode()
                              for venue, tx in sends]
        return answers, [TxStatus("s1", True, 7, amount_out=5)]

    @staticmethod
    async def _statuses(signatures: list[str]) -> list[TxStatus | None]:
        return [TxStatus(s, True, 9) if s == "s1" else None for s in signatures]

    @staticmethod
    async def _nothing(*args: Any) -> None:
        return None


async def test_a_swap_that_landed_on_sending_answers_its_first_lookup_without_a_call() -> None:
    chain = FakeChain()
    client = RayChainClient(chain, window_s=0.0)

    assert await client.send_transaction("raydium", b"s1") == "s1"
    assert await client.send_transaction("meteora", b"s2") == "s2"
    assert await client.signature_statuses(["s1"]) == [TxStatus("s1", True, 7, amount_out=5)]
    assert chain.signature_statuses.calls == []

    # The next lookup of s1, and any of a swap that had not landed, asks the chain.
    assert await client.signature_statuses(["s2", "s1"]) == [None, TxStatus("s1", True, 9)]
    assert chain.signature_statuses.calls == [(["s2", "s1"],)]


async def test_a_mixed_lookup_asks_only_for_what_it_does_not_know() -> None:
    chain = FakeChain()
    client = RayChainClient(chain, window_s=0.0)
    await client.send_transaction("raydium", b"s1")

    answers = await client.signature_statuses(["s3", "s1"])

    assert answers == [None, TxStatus("s1", True, 7, amount_out=5)]
    assert chain.signature_statuses.calls == [(["s3"],)]


async def test_a_refused_send_is_its_own_answer() -> None:
    chain = FakeChain()
    client = RayChainClient(chain, window_s=0.0)

    with pytest.raises(VenueUnavailable):
        await client.send_transaction("down", b"x")
    assert client._landed == {"s1": TxStatus("s1", True, 7, amount_out=5)}
