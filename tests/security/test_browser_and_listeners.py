"""Issue 12's browser and listener findings against the running engine."""

from __future__ import annotations

import os
import stat
from typing import Any

import httpx
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
