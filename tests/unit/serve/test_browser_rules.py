"""Unit tests for the browser rules: allowed Hosts, and allowed Origins for state changes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from serve.browser_rules import BrowserRules, allowed_hosts, host_name

LOCAL = allowed_hosts("127.0.0.1")


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8000", "127.0.0.1"), ("localhost", "localhost"), ("[::1]:8000", "::1"),
    ("::1", "::1"), ("evil.example:80", "evil.example"),
])
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_allowed_hosts_are_loopback_the_bind_address_and_the_configured_ones() -> None:
    assert allowed_hosts("10.0.0.5", ["api.example"]) == {
        "127.0.0.1", "localhost", "::1", "10.0.0.5", "api.example"}
    assert allowed_hosts("0.0.0.0") is None  # every interface, no names: cannot tell  # noqa: S104
    assert allowed_hosts("127.0.0.1", ["*"]) is None


async def call(method: str, headers: dict[str, str], *, kind: str = "http",
               origins: frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], bool]:
    """Run the middleware once; return what it sent and whether the app was reached."""
    reached = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    state = SimpleNamespace(allowed_hosts=LOCAL, allowed_origins=origins)
    scope = {"type": kind, "method": method, "app": SimpleNamespace(state=state),
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    await BrowserRules(app)(scope, receive, send)
    return sent, reached


async def test_a_foreign_host_is_refused_before_the_app() -> None:
    sent, reached = await call("GET", {"host": "evil.example:8000"})
    assert not reached and sent[0]["status"] == 400
    assert sent[1]["body"] == b'{"error": "host not allowed"}'


async def test_a_post_from_a_foreign_origin_is_refused() -> None:
    sent, reached = await call("POST", {"host": "127.0.0.1:8000",
                                        "origin": "https://evil.example"})
    assert not reached and sent[0]["status"] == 403


@pytest.mark.parametrize(("method", "headers", "origins"), [
    ("POST", {"host": "127.0.0.1:8000"}, frozenset()),  # no Origin: not a browser
    ("GET", {"host": "127.0.0.1:8000", "origin": "https://evil.example"}, frozenset()),
    ("POST", {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, frozenset()),
    ("POST", {"host": "localhost:8000", "origin": "https://app.example"},
     frozenset({"https://app.example"})),
])
async def test_what_is_allowed_reaches_the_app(method: str, headers: dict[str, str],
                                               origins: frozenset[str]) -> None:
    sent, reached = await call(method, headers, origins=origins)
    assert reached and sent == []


async def test_a_websocket_from_a_foreign_origin_is_closed_before_the_handshake() -> None:
    sent, reached = await call("GET", {"host": "127.0.0.1:8000", "origin": "https://evil.example"},
                               kind="websocket")
    assert not reached and sent == [{"type": "websocket.close", "code": 1008,
                                     "reason": "origin not allowed"}]
