"""The simulated chain's client: what it learns with a send saves the first status lookup."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.simulated_chain import RayChainClient
from core.errors import VenueUnavailable
from core.quotes import TxStatus
from tests.kit.fakes import ActorMethod, FakeWire


class FakeChain:
    """Landed at once: s1 confirmed; s2 still on its way; a send to `down` is refused."""

    def __init__(self) -> None:
        self.send_many = ActorMethod(self._send_many)
        self.signature_statuses = ActorMethod(self._statuses)
        self.latest_blockhash = ActorMethod(self._nothing)
        self.block_height = ActorMethod(self._nothing)
        self.quote_at_once = ActorMethod(self._nothing)

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


class WiredChain(FakeChain):
    """FakeChain that also serves its calls on a loopback wire, as the chain actor does."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.wire = FakeWire(self, node, ("send_many", "signature_statuses", "quote_at_once"))
        self.served = self.wire.served
        self.wire_address = ActorMethod(self.wire.address)

    async def restart(self) -> None:
        """The chain died and came back: its wire has a new port and token."""
        assert self.wire.server is not None
        await self.wire.close()


async def test_on_the_chains_node_calls_go_over_the_wire_not_the_actor() -> None:
    chain = WiredChain("node-a")
    client = RayChainClient(chain, window_s=0.0, node_id="node-a")
    try:
        assert await client.send_transaction("raydium", b"s2") == "s2"
        assert await client.signature_statuses(["s2"]) == [None]

        assert chain.served == ["send_many", "signature_statuses"]
        assert chain.send_many.calls == [] and chain.signature_statuses.calls == []
        assert len(chain.wire_address.calls) == 1
    finally:
        await chain.restart()


async def test_on_another_node_calls_go_to_the_actor_and_the_wire_is_asked_once() -> None:
    chain = WiredChain("node-b")
    client = RayChainClient(chain, window_s=0.0, node_id="node-a")
    try:
        await client.send_transaction("raydium", b"s2")
        await client.send_transaction("raydium", b"s3")

        assert chain.served == []
        assert len(chain.send_many.calls) == 2
        assert len(chain.wire_address.calls) == 1
    finally:
        await chain.restart()


async def test_without_a_node_the_wire_is_never_asked_for() -> None:
    chain = WiredChain("node-a")
    client = RayChainClient(chain, window_s=0.0)

    await client.send_transaction("raydium", b"s2")

    assert chain.wire_address.calls == [] and len(chain.send_many.calls) == 1


async def test_after_the_chain_restarts_the_next_call_finds_its_new_wire() -> None:
    chain = WiredChain("node-a")
    client = RayChainClient(chain, window_s=0.0, node_id="node-a")
    await client.send_transaction("raydium", b"s2")
    await chain.restart()

    # The client's connection sees the chain go (a call in flight then fails: test_wire.py),
    for _ in range(100):
        if client._h._wire is not None and client._h._wire.closed:
            break
        await asyncio.sleep(0.01)
    # and the next call asks the chain for its wire again.
    try:
        assert await client.send_transaction("raydium", b"s4") == "s4"
        assert len(chain.wire_address.calls) == 2
        assert chain.served[-1] == "send_many"
    finally:
        await chain.restart()
