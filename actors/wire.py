"""A loopback wire: an actor's per-order calls over a socket instead of actor calls.

A Ray actor call costs about 2 ms of CPU on these 2-core machines (1 ms in each process,
`scripts/measure_actor_call_cpu.py`), a request on a loopback socket a fifth of that. So an
actor called for every order (the OrderManager, each ExecutionWorker, the simulated chain)
also serves those calls here, to the processes on its own node; Ray still places, names,
restarts and watches the actors, carries the wire's port and token, and carries every call
of a process on another node (which has no loopback to the actor).

Frames are a 4-byte big-endian length and a pickle. The first frame a client sends is the
token the actor handed out over Ray; the server closes a connection whose first frame is
anything else, and unpickles nothing before it. A request is `(id, method, args)`; an answer
is `(id, kind, payload)`, where kind is `ok` (the value), `err` (what the method raised),
`item` (a streamed method's next chunk) or `end` (its last). Requests on one connection start
in the order they arrive and run concurrently, as an async actor's calls do; a request whose
client has gone still runs to its end (a send is never cut in half). Nothing is retried: a
call whose connection closes fails with WireClosed, as a call to a dead actor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import itertools
import logging
import pickle
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
_MAX_FRAME = 64 << 20  # a batch of a few thousand signed swaps is a few MB
_TOKEN_WAIT_S = 5.0
_WRITE_BUFFER_HIGH = 1 << 20  # wait for the socket past this many unsent bytes

Handler = Callable[..., Any]  # an async function, or an async generator function (streams)


class WireClosed(ConnectionError):
    """The connection to an actor's wire closed; a call on it has no answer."""


async def _read_frame(reader: asyncio.StreamReader, limit: int = _MAX_FRAME) -> bytes:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > limit:
        raise WireClosed(f"frame of {size} bytes over the limit of {limit}")
    return await reader.readexactly(size)


def _framed(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _frame(message: object) -> bytes:
    return _framed(pickle.dumps(message, protocol=5))


async def _put(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write `data`; wait for the socket only once this many bytes are waiting unsent."""
    writer.write(data)
    if writer.transport.get_write_buffer_size() > _WRITE_BUFFER_HIGH:
        await writer.drain()


class WireServer:
    """Serve `handlers` (method name to bound method) to clients that know `token`."""

    def __init__(self, handlers: Mapping[str, Handler], token: bytes,
                 host: str = "127.0.0.1") -> None:
        self._handlers = dict(handlers)
        self._token = token
        self._host = host
        self._server: asyncio.Server | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def token(self) -> bytes:
        return self._token

    async def start(self) -> int:
        """Listen on an ephemeral port of `host`; return the port."""
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening and close every connection (their calls in flight still finish)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            async with asyncio.timeout(_TOKEN_WAIT_S):
                first = await _read_frame(reader, limit=len(self._token))
            if not hmac.compare_digest(first, self._token):
                log.warning("wire: a connection without the token was closed")
                return
            while True:
                # Only after the token: a client that knows it got it from the actor over Ray.
                frame = await _read_frame(reader)
                request_id, method, args = pickle.loads(frame)  # noqa: S301
                task = asyncio.create_task(self._answer(writer, request_id, method, args))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away (or never said who it is)
        except Exception as exc:  # a frame that is not a request: the connection is closed
            log.warning("wire: closing a connection that sent a bad frame: %r", exc)
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, method: str,
                      args: tuple[Any, ...]) -> None:
        handler = self._handlers.get(method)
        try:
            if handler is None:
                raise AttributeError(f"the wire serves no method {method!r}")
            answer = handler(*args)
            if inspect.isasyncgen(answer):
                async for chunk in answer:
                    await self._send(writer, (request_id, "item", chunk))
                await self._send(writer, (request_id, "end", None))
            else:
                await self._send(writer, (request_id, "ok", await answer))
        except Exception as exc:  # the caller's error, as an actor call would raise it
            await self._send(writer, (request_id, "err", exc))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: tuple[int, str, Any]) -> None:
        if writer.is_closing():
            return  # nobody to tell; the work itself is done
        try:
            data = _frame(message)
        except Exception as exc:  # an answer pickle cannot carry: say so instead
            data = _frame((message[0], "err", RuntimeError(f"unsendable answer: {exc!r}")))
        with contextlib.suppress(ConnectionError):
            await _put(writer, data)


class WireClient:
    """One connection to a WireServer, shared by every call of a process (one event loop).

    A call on a connection that breaks raises WireClosed, as an actor call to a dead actor
    raises; `closed` then tells the owner to connect anew (a client is never reopened).
    """

    def __init__(self, host: str, port: int, token: bytes) -> None:
        self.address = (host, port)
        self._token = token
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Lock | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[str, Any]]] = {}
        self._ids = itertools.count()
        self._failure: Exception | None = None  # why the connection closed

    @property
    def closed(self) -> bool:
        return self._failure is not None

    async def call(self, method: str, *args: Any) -> Any:
        """Call `method(*args)` on the server and return its value (or raise its error)."""
        writer = await self._connected()
        request_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._write(writer, (request_id, method, args))
            return await answer
        finally:
            self._pending.pop(request_id, None)

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """Call a streaming `method(*args)`; yield each chunk as it arrives."""
        writer = await self._connected()
        request_id = next(self._ids)
        chunks: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._streams[request_id] = chunks
        try:
            await self._write(writer, (request_id, method, args))
            while True:
                kind, payload = await chunks.get()
                if kind == "item":
                    yield payload
                elif kind == "end":
                    return
                else:
                    raise payload
        finally:
            self._streams.pop(request_id, None)

    def close(self) -> None:
        self._fail(WireClosed("the wire was closed"))
        if self._writer is not None:
            self._writer.close()

    async def _connected(self) -> asyncio.StreamWriter:
        if self.closed:
            raise WireClosed("the connection to the actor closed")
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                try:
                    reader, writer = await asyncio.open_connection(*self.address)
                except OSError as exc:  # the actor went away: its owner asks for it anew
                    failure = WireClosed(f"cannot reach the actor's wire: {exc!r}")
                    self._fail(failure)
                    raise failure from None
                writer.write(_framed(self._token))
                self._reader_task = asyncio.create_task(self._read(reader))
                self._writer = writer
        return self._writer

    async def _write(self, writer: asyncio.StreamWriter, message: tuple[int, str, Any]
                     ) -> None:
        if self.closed:
            raise WireClosed("the connection to the actor closed")
        await _put(writer, _frame(message))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: Exception = WireClosed("the actor closed the connection")
        try:
            while True:
                # The actor's answers: the port came from the actor itself, over Ray.
                frame = await _read_frame(reader)
                request_id, kind, payload = pickle.loads(frame)  # noqa: S301
                answer = self._pending.get(request_id)
                if answer is not None:
                    if answer.done():
                        continue  # its caller was cancelled
                    if kind == "ok":
                        answer.set_result(payload)
                    else:
                        answer.set_exception(payload)
                    continue
                chunks = self._streams.get(request_id)
                if chunks is not None:
                    chunks.put_nowait((kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = WireClosed(f"the connection to the actor broke: {exc!r}")
        except Exception as exc:  # a frame that is not ours: nothing on it can be trusted
            error = WireClosed(f"the wire read a bad frame: {exc!r}")
        finally:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        self._failure = self._failure or error
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            if not answer.done():
                answer.set_exception(error)
        streams, self._streams = self._streams, {}
        for chunks in streams.values():
            chunks.put_nowait(("err", error))
