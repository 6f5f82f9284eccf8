"""What a browser may do: only allowed Hosts, and only allowed Origins may POST or open /ws.

A web page can reach a loopback port: through DNS rebinding it arrives with a Host of its
own choosing, and any page can POST or open a WebSocket with its own Origin. Requests from
non-browser clients carry no Origin and are not affected by the Origin rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import LOOPBACK

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ANY_INTERFACE = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names, not a bind


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Return the Host names to accept (None: any), from the bind address and settings."""
    extra = frozenset(extra)
    if "*" in extra or (bind_host in _ANY_INTERFACE and not extra):
        return None  # bound to every interface and no names configured: cannot tell
    return LOOPBACK | {bind_host} | extra


def host_name(host_header: str) -> str:
    """Return the name part of a Host header ("[::1]:8000" -> "::1", "a:80" -> "a")."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class BrowserRules:
    """ASGI middleware: 400 for a Host not allowed, 403 for an Origin not allowed.

    The Origin rule covers requests that change state (any method but GET, HEAD, OPTIONS)
    and WebSocket handshakes; the app reads the lists from `app.state` when it sets them.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.inner(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        hosts: frozenset[str] | None = getattr(state, "allowed_hosts", None)
        origins: frozenset[str] = getattr(state, "allowed_origins", frozenset())
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        host = headers.get(b"host", b"").decode("latin-1")
        if hosts is not None and host_name(host) not in hosts:
            await _refuse(scope, send, 400, "host not allowed")
            return
        origin = headers.get(b"origin")
        changes_state = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
        if origin is not None and changes_state and not _origin_allowed(
                origin.decode("latin-1"), host, origins):
            await _refuse(scope, send, 403, "origin not allowed")
            return
        await self.inner(scope, receive, send)


def _origin_allowed(origin: str, host: str, origins: frozenset[str]) -> bool:
    # The API's own pages (/docs) are same-origin; the Host rule has vetted `host` already.
    return origin in origins or origin in (f"http://{host}", f"https://{host}")


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        # Refused before the handshake completes: the client sees an HTTP 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message})
        return
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
