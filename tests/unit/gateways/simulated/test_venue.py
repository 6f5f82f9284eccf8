"""Unit tests for the simulated venue gateway: quotes, swaps and sends through a chain client."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.transaction import Transaction

from core.errors import InvalidInput, NotPermitted
from core.quotes import TxStatus
from core.tokens import TokenRegistry
from gateways.simulated.program import decode_swap
from gateways.simulated.schema import PoolQuote
from gateways.simulated.venue import SimulatedVenue
from tests.kit.chain import T0, make_chain
from tests.kit.clock import FakeClock


class FakeChain:
    """A SimChain behind the ChainClient protocol, counting the calls that reach it."""

    def __init__(self) -> None:
        self.chain = make_chain()
        self.now = T0
        self.calls: list[str] = []
        self.sent: list[tuple[str, bytes]] = []

    async def quote(self, venue: str, token_in: str, token_out: str, amount_in: int
                    ) -> PoolQuote:
        self.calls.append(f"quote:{venue}:{token_in}:{token_out}")
        return self.chain.quote(venue, token_in, token_out, amount_in, self.now)

    async def latest_blockhash(self) -> tuple[str, int]:
        self.calls.append("blockhash")
        return self.chain.latest_blockhash(self.now)

    async def send_transaction(self, venue: str, tx_bytes: bytes) -> str:
        self.calls.append(f"send:{venue}")
        self.sent.append((venue, tx_bytes))
        return self.chain.send_transaction(tx_bytes, self.now, 0.0)

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        return self.chain.signature_statuses(signatures, self.now)

    async def block_height(self) -> int:
        self.calls.append("height")
        return self.chain.block_height(self.now)


async def test_the_gateway_quotes_builds_and_sends_through_the_chain_client() -> None:
    fake, tokens, wallet = FakeChain(), TokenRegistry(), Keypair.from_seed(bytes([3]) * 32)
    fake.chain.fund(str(wallet.pubkey()), {"SOL": 10**12, "USDC": 10**12})
    gateway = SimulatedVenue("meteora", fake, wallet, tokens)
    sol, usdc = tokens.resolve("SOL").mint, tokens.resolve("USDC").mint
    quote = await gateway.quote(sol, usdc, 10**9)
    assert quote.venue == "meteora" and quote.amount_out > 0 and quote.latency_ms >= 0
    assert fake.calls == ["quote:meteora:SOL:USDC"]

    first = await gateway.build_swap(quote, quote.amount_out * 99 // 100, "order-1:1")
    second = await gateway.build_swap(quote, quote.amount_out * 99 // 100, "order-2:1")
    assert fake.calls.count("blockhash") == 1  # one blockhash serves builds within a slot
    assert first.signature != second.signature  # the memo keeps identical swaps apart
    swap = decode_swap(Transaction.from_bytes(first.tx_bytes))
    assert swap.amount_in == 10**9 and swap.min_amount_out == quote.amount_out * 99 // 100

    await gateway.send(first)
    assert fake.sent == [("meteora", first.tx_bytes)]
    (status,) = await gateway.statuses([first.signature])
    assert status is not None and status.confirmed and status.error is None

    with pytest.raises(InvalidInput):  # a quote from another venue is refused
        await SimulatedVenue("raydium", fake, wallet, tokens).build_swap(quote, 1, "x")


async def test_a_gateway_without_a_wallet_quotes_but_never_signs() -> None:
    fake, tokens = FakeChain(), TokenRegistry()
    quoting_only = SimulatedVenue("raydium", fake, None, tokens)  # as in an ingress replica
    quote = await quoting_only.quote(tokens.resolve("SOL").mint, tokens.resolve("USDC").mint,
                                     10**9)
    with pytest.raises(NotPermitted, match="only quotes"):
        await quoting_only.build_swap(quote, 1, "order-1:1")
    assert "blockhash" not in fake.calls


async def test_the_block_height_is_asked_at_most_once_a_slot() -> None:
    fake, clock = FakeChain(), FakeClock(100.0)
    gateway = SimulatedVenue("raydium", fake, Keypair.from_seed(bytes([3]) * 32),
                             TokenRegistry(), clock=clock)
    first = await gateway.block_height()
    fake.now += 2.0  # the chain moves on by five blocks
    assert await gateway.block_height() == first  # within the slot: the answer it had
    assert fake.calls == ["height"]
    clock.advance(0.5)  # a slot later it asks again and sees the new height
    assert await gateway.block_height() == first + 5
    assert fake.calls == ["height", "height"]
