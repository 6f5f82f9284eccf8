"""The raw load client's response reader: status, JSON body and keep-alive, as HAProxy and
uvicorn answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dexec.bench import read_response


def responses(data: bytes, count: int = 1) -> list[tuple[int, Any, bool]]:
    async def read() -> list[tuple[int, Any, bool]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [await read_response(reader) for _ in range(count)]

    return asyncio.run(read())


def test_a_sized_body_is_parsed_and_the_connection_kept_for_the_next_response() -> None:
    accepted = (b'HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n'
                b'content-length: 18\r\n\r\n{"order_id":"o-1"}')
    refused = (b'HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 11\r\n\r\n'
               b'{"error":1}')
    assert responses(accepted + refused, 2) == [
        (202, {"order_id": "o-1"}, True), (429, {"error": 1}, True)]


def test_a_chunked_body_is_joined_and_a_close_is_reported() -> None:
    data = (b'HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n'
            b'Connection: close\r\n\r\n5;ext=1\r\n{"err\r\n6\r\nor":2}\r\n0\r\nX-T: 1\r\n\r\n')
    assert responses(data) == [(503, {"error": 2}, False)]


def test_an_empty_body_is_an_empty_answer() -> None:
    assert responses(b"HTTP/1.1 204 No Content\r\n\r\n") == [(204, {}, True)]


def test_a_response_cut_short_raises_rather_than_inventing_a_body() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        responses(b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"a"')
