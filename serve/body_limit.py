"""Refuse request bodies over a size limit with 413, before any route reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: read the whole body (at most `limit` bytes), then hand it on.

    A body that declares a larger Content-Length, or streams more than `limit` bytes
    without declaring one, is answered 413 and never reaches the app. The limit is read
    from `app.state.max_body_bytes` when the app sets one (DEXEC_MAX_BODY_BYTES).
    """

    def __init__(self, inner: ASGIApp, limit: int = 64 * 1024) -> None:
        self.inner = inner
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        app = scope.get("app")
        limit = getattr(getattr(app, "state", None), "max_body_bytes", self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.inner(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._too_large(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.inner(scope, _replay([whole], receive), send)

    @staticmethod
    async def _too_large(send: Send, limit: int) -> None:
        body = json.dumps({"error": f"request body is larger than {limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive that answers `messages` first, then asks `receive`."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
