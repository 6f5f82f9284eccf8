"""The bench's schedule starts once its load client is ready: making the client is not the
engine's time."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import httpx
import pytest

from dexec.bench import Tally, submit_load

MAKE_S = 0.05  # what making one (slow) client costs in this test


async def accepting_server() -> tuple[asyncio.Server, int]:
    """Answer every POST with 202 and a fresh order id, keeping the connection."""
    ids = itertools.count()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                size = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                             if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(size)
                body = json.dumps({"order_id": f"o-{next(ids)}"}).encode()
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_httpx_clients_are_made_before_the_schedule_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[float] = []

    class SlowClient(httpx.AsyncClient):
        def __init__(self, **kwargs: Any) -> None:
            time.sleep(MAKE_S)  # as loading the CA bundle does, about 40 ms here
            super().__init__(**kwargs)
            made.append(time.time())

    monkeypatch.setattr(httpx, "AsyncClient", SlowClient)
    server, port = await accepting_server()
    args = argparse.Namespace(duration=0.5, orders=20, rate=40.0, concurrency=8, client="httpx",
                              ws=False, httpx_connections=2, api_key=None)
    tally = Tally()
    try:
        await submit_load(args, f"http://127.0.0.1:{port}", "run", tally, lambda: None)
    finally:
        server.close()

    assert len(made) == 4 and tally.accepted == 20
    # Order 0 was due when the schedule started: after the last client was made, so the
    # 0.2 s of making them is not counted against the engine as a late submission.
    assert min(tally.submitted_at.values()) >= made[-1]
    assert tally.first_submit >= made[-1]
