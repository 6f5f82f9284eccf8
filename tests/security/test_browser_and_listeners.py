"""Issue 12's browser and listener findings against the running engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import websockets

from dexec.launch import Engine, haproxy_dir
from tests.integration.client import order_body, order_count


async def test_a_foreign_host_is_refused_and_never_redirected_to(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        evil = await client.get("/api/orders/", headers={"host": "evil.example"})
        slash = await client.get("/api/orders/")
    assert evil.status_code == 400 and "location" not in evil.headers
    # Was a 307 to http://evil.example/api/orders built from the client's Host.
    assert slash.status_code == 404 and "location" not in slash.headers


async def test_a_post_from_a_web_page_elsewhere_is_refused_with_nothing_stored(
    api: str, engine: Engine, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api) as client:
        foreign = await client.post("/api/orders", json=order_body(),
                                    headers={"origin": "https://evil.example"})
        own = await client.post("/api/orders", json=order_body(),
                                headers={"origin": engine.api_url})
    assert foreign.status_code == 403 and foreign.json() == {"error": "origin not allowed"}
    assert own.status_code == 202  # the API's own pages (/docs) may
    assert order_count(db) == before + 1


async def test_a_websocket_from_a_web_page_elsewhere_is_refused(ws_url: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(ws_url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403


def test_haproxy_s_admin_socket_lives_in_a_private_directory(engine: Engine) -> None:
    private = haproxy_dir(engine.settings.port)
    info = private.lstat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    sockets = list(private.glob("*/admin.sock"))
    assert sockets, f"no admin socket under {private}"


def test_haproxy_s_admin_socket_is_private_to_its_user(engine: Engine) -> None:
    # One directory per Ray node id; earlier sessions may have left theirs: take the newest.
    sock = max(haproxy_dir(engine.settings.port).glob("*/admin.sock"),
               key=lambda path: path.stat().st_mtime)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # Serve's template makes it 666


def test_haproxy_s_stats_and_metrics_listen_on_loopback_only(engine: Engine) -> None:
    port = engine.settings.port
    admin_ports = {port + 3, port + 4}  # the stats page, the Prometheus endpoint
    listening = [c for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in admin_ports]
    assert {c.laddr.port for c in listening} == admin_ports  # both are up...
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}  # ...on loopback alone
    stats = httpx.get(f"http://127.0.0.1:{port + 4}/metrics", timeout=5.0)
    assert stats.status_code == 200 and "haproxy_" in stats.text


async def test_a_client_that_sends_its_headers_slowly_is_cut_off(engine: Engine) -> None:
    """Slowloris: a byte of header every half second no longer holds a connection for an hour."""
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.settings.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    answer = b""
    with contextlib.suppress(ConnectionError):
        while time.monotonic() - started < 15:
            writer.write(b"X")
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(reader.read(4096), 0.5)
                if not chunk:
                    break
                answer += chunk
    elapsed = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert elapsed < engine.settings.http_request_timeout_s + 3


def test_one_address_cannot_hold_every_connection(engine: Engine) -> None:
    limit = engine.settings.max_connections_per_address
    held: list[socket.socket] = []
    try:
        for _ in range(limit):
            held.append(socket.create_connection(("127.0.0.1", engine.settings.port), 5.0))
        refused = httpx.get(f"{engine.api_url}/healthz", timeout=5.0)
    finally:
        for s in held:
            s.close()
    assert refused.status_code == 429
    deadline = time.monotonic() + 5.0
    while (status := httpx.get(f"{engine.api_url}/healthz", timeout=5.0).status_code) != 200:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_ray_itself_demands_the_cluster_s_token(engine: Engine) -> None:
    """Ray's GCS, raylet and agents bind every interface: only a token holder may call them.

    Ray 2.60 turns token authentication on for a local cluster by default (setting
    RAY_AUTH_MODE ourselves after `import ray` would leave this process's cached mode stale);
    this test catches a Ray whose default differs.
    """
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN
