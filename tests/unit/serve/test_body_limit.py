"""Unit tests for BodyLimit, driven as an ASGI app with fake receive and send (no server)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from serve.body_limit import BodyLimit

Message = dict[str, Any]


class Client:
    """The server side of one request: the messages the client sends, and what it is sent."""

    def __init__(self, messages: Iterable[Message]) -> None:
        self.messages = list(messages)
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.reads >= len(self.messages):
            raise AssertionError("read past the last message the client sent")
        self.reads += 1
        return self.messages[self.reads - 1]

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def status(self) -> int:
        return int(self.sent[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


class App:
    """The inner app: records what it is given and reads `reads` messages, then answers 200."""

    def __init__(self, reads: int = 1) -> None:
        self.reads = reads
        self.calls: list[tuple[dict[str, Any], Any, Any]] = []
        self.received: list[Message] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))
        for _ in range(self.reads):
            self.received.append(await receive())
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def http(length: int | str | None = None, app: Any = None) -> dict[str, Any]:
    headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/orders",
                             "headers": headers}
    if app is not None:
        scope["app"] = app
    return scope


def body(chunk: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": chunk, "more_body": more}


DISCONNECT: Message = {"type": "http.disconnect"}


def assert_refused(client: Client, limit: int) -> None:
    assert client.status() == 413
    assert (b"content-type", b"application/json") in client.sent[0]["headers"]
    assert client.json() == {"error": f"request body is larger than {limit} bytes"}


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    app, client = App(), Client([body(b"x" * 11)])
    await BodyLimit(app, limit=10)(http(length=11), client.receive, client.send)
    assert_refused(client, 10)
    assert app.calls == []
    assert client.reads == 0


async def test_a_body_of_exactly_the_limit_passes() -> None:
    app, client = App(), Client([body(b"x" * 10)])
    await BodyLimit(app, limit=10)(http(length=10), client.receive, client.send)
    assert client.status() == 200
    assert app.received == [body(b"x" * 10)]


async def test_a_body_streaming_past_the_limit_without_a_length_is_refused() -> None:
    app = App()
    client = Client([body(b"x" * 6, more=True), body(b"x" * 6, more=True), body(b"x", more=False)])
    await BodyLimit(app, limit=10)(http(), client.receive, client.send)
    assert_refused(client, 10)
    assert app.calls == []


async def test_a_length_that_is_not_a_number_does_not_stop_the_count() -> None:
    app, client = App(), Client([body(b"x" * 11)])
    await BodyLimit(app, limit=10)(http(length="eleven"), client.receive, client.send)
    assert_refused(client, 10)
    assert app.calls == []


async def test_a_body_under_the_limit_reaches_the_app_whole_then_the_real_receive() -> None:
    app = App(reads=2)
    client = Client([body(b'{"amount":', more=True), body(b' "1",', more=True),
                     body(b' "x": 2}', more=False), DISCONNECT])
    scope = http()
    await BodyLimit(app, limit=100)(scope, client.receive, client.send)

    assert app.received == [
        {"type": "http.request", "body": b'{"amount": "1", "x": 2}', "more_body": False},
        DISCONNECT,  # the second read reaches the client
    ]
    assert client.reads == 4
    assert app.calls[0][0] is scope
    assert client.sent == [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"ok"},
    ]


async def test_a_client_that_leaves_before_its_body_is_handed_on_as_gone() -> None:
    app, client = App(), Client([DISCONNECT])
    await BodyLimit(app, limit=10)(http(), client.receive, client.send)
    assert app.received == [DISCONNECT]


@pytest.mark.parametrize(("default", "configured", "size", "status"), [
    (64 * 1024, 4, 5, 413),  # the app's setting is stricter than the default
    (4, 100, 50, 200),  # and it can allow more
])
async def test_the_apps_setting_overrides_the_default_limit(
        default: int, configured: int, size: int, status: int) -> None:
    app = SimpleNamespace(state=SimpleNamespace(max_body_bytes=configured))
    for length in (size, None):  # declared or streamed
        inner, client = App(), Client([body(b"x" * size)])
        await BodyLimit(inner, limit=default)(http(length=length, app=app), client.receive,
                                              client.send)
        assert client.status() == status
        if status == 413:
            assert_refused(client, configured)
            assert inner.calls == []


async def test_an_app_without_the_setting_keeps_the_default() -> None:
    app = SimpleNamespace(state=SimpleNamespace())
    inner, client = App(), Client([body(b"x" * 5)])
    await BodyLimit(inner, limit=4)(http(length=5, app=app), client.receive, client.send)
    assert_refused(client, 4)


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_pass_through_untouched(kind: str) -> None:
    scope = {"type": kind, "path": "/api/stream", "headers": [(b"content-length", b"999999")]}
    app, client = App(reads=0), Client([{"type": f"{kind}.connect"}])
    await BodyLimit(app, limit=1)(scope, client.receive, client.send)
    assert app.calls == [(scope, client.receive, client.send)]
    assert client.reads == 0
    assert client.sent == []
