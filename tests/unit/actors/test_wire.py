"""The loopback wire: calls, streams, errors, the token and broken links."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.wire import WireClient, WireClosed, WireServer
from core.errors import VenueUnavailable

TOKEN = b"t" * 32


class Chain:
    """Handlers that record what ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []
        self.release = asyncio.Event()

    async def echo(self, value: Any) -> Any:
        self.ran.append(("echo", value))
        return value

    async def slow(self, value: Any) -> Any:
        await self.release.wait()
        self.ran.append(("slow", value))
        return value

    async def refuse(self, venue: str) -> None:
        raise VenueUnavailable(f"{venue} is down", venue=venue)

    async def chunks(self, n: int) -> AsyncIterator[list[int]]:
        for i in range(n):
            yield [i]

    async def chunks_then_fail(self) -> AsyncIterator[int]:
        yield 1
        raise VenueUnavailable("broke mid-stream")


async def serve(chain: Chain, token: bytes = TOKEN) -> tuple[WireServer, int]:
    handlers = {name: getattr(chain, name) for name in
                ("echo", "slow", "refuse", "chunks", "chunks_then_fail")}
    server = WireServer(handlers, token)
    return server, await server.start()


@contextlib.asynccontextmanager
async def linked(chain: Chain, client_token: bytes = TOKEN
                 ) -> AsyncIterator[tuple[WireServer, WireClient]]:
    """A server for `chain` and a client of it, both closed at the end."""
    server, port = await serve(chain)
    client = WireClient("127.0.0.1", port, client_token)
    try:
        yield server, client
    finally:
        client.close()
        await server.close()


async def test_calls_answer_their_own_caller_whatever_order_they_finish_in() -> None:
    chain = Chain()
    async with linked(chain) as (_, client):
        slow = asyncio.create_task(client.call("slow", "first"))
        fast = await asyncio.gather(*(client.call("echo", (i, b"\x00" * i)) for i in range(50)))
        assert fast == [(i, b"\x00" * i) for i in range(50)]
        assert not slow.done()  # a slow call holds back no other on the same connection
        chain.release.set()
        assert await slow == "first"


async def test_an_error_is_raised_to_its_caller_as_itself() -> None:
    async with linked(Chain()) as (_, client):
        with pytest.raises(VenueUnavailable, match="raydium is down") as caught:
            await client.call("refuse", "raydium")
        assert caught.value.venue == "raydium"
        with pytest.raises(AttributeError, match="no method 'nope'"):
            await client.call("nope")
        assert await client.call("echo", 1) == 1  # the connection is still good


async def test_a_stream_yields_each_chunk_then_ends_or_raises() -> None:
    async with linked(Chain()) as (_, client):
        assert [c async for c in client.stream("chunks", 3)] == [[0], [1], [2]]
        got: list[int] = []

        async def read_all() -> None:
            async for chunk in client.stream("chunks_then_fail"):
                got.append(chunk)

        with pytest.raises(VenueUnavailable, match="mid-stream"):
            await read_all()
        assert got == [1]


async def test_a_client_without_the_token_runs_nothing_and_is_cut_off() -> None:
    chain = Chain()
    async with linked(chain, client_token=b"x" * 32) as (_, client):
        with pytest.raises(WireClosed):
            await client.call("echo", "hello")
        assert client.closed
        assert chain.ran == []
        # A raw connection that sends a pickle first is closed before anything is read.
        reader, writer = await asyncio.open_connection(*client.address)
        writer.write(b"\x00\x00\x00\x05hello")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert chain.ran == []


async def test_calls_in_flight_when_the_server_goes_fail_and_the_client_says_closed() -> None:
    chain = Chain()
    async with linked(chain) as (server, client):
        assert await client.call("echo", 1) == 1
        waiting = asyncio.create_task(client.call("slow", 2))
        await asyncio.sleep(0.05)
        await server.close()  # as a chain that died: its side of the connection closes
        with pytest.raises(WireClosed):
            await waiting
        assert client.closed
        with pytest.raises(WireClosed):
            await client.call("echo", 3)
        chain.release.set()


async def test_a_request_whose_client_went_away_still_runs_to_its_end() -> None:
    chain = Chain()
    async with linked(chain) as (_, client):
        waiting = asyncio.create_task(client.call("slow", "send"))
        await asyncio.sleep(0.05)
        client.close()
        with pytest.raises(WireClosed):
            await waiting
        chain.release.set()
        for _ in range(100):
            if chain.ran:
                break
            await asyncio.sleep(0.01)
        assert chain.ran == [("slow", "send")]


async def test_a_wire_that_cannot_connect_says_closed_so_its_owner_asks_anew() -> None:
    server, port = await serve(Chain())
    await server.close()  # nothing listens on the port any more
    client = WireClient("127.0.0.1", port, TOKEN)

    with pytest.raises(WireClosed, match="cannot reach"):
        await client.call("echo", 1)
    assert client.closed


async def test_a_bad_frame_after_the_token_closes_that_connection_only() -> None:
    chain = Chain()
    async with linked(chain) as (_, client):
        assert await client.call("echo", 1) == 1
        reader, writer = await asyncio.open_connection(*client.address)
        writer.write(len(TOKEN).to_bytes(4, "big") + TOKEN + b"\x00\x00\x00\x03bad")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert await client.call("echo", 2) == 2  # the other connection is untouched
