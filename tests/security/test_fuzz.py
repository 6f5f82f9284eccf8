"""Fuzz the running API: no generated request answers a 5xx, no frame drops a connection."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import schemathesis
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dexec.launch import Engine

RELAXED = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}


def test_no_request_generated_from_the_openapi_schema_is_a_server_error(engine: Engine) -> None:
    schema = schemathesis.openapi.from_url(f"{engine.api_url}/openapi.json")
    headers = {"Authorization": f"Bearer {engine.api_key}"}
    statuses: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=40, **RELAXED)
        def no_server_error(case: Any) -> None:
            response = case.call(base_url=engine.api_url, headers=headers, timeout=30)
            statuses[f"{case.operation.label} {response.status_code // 100}xx"] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.text[:300])

        no_server_error()
    labels = {key.rsplit(" ", 1)[0] for key in statuses}
    assert {"POST /api/orders", "GET /api/orders/{order_id}", "GET /api/quotes"} <= labels
    assert sum(statuses.values()) >= 100, statuses


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"op": st.sampled_from(["submit", "subscribe", "unsubscribe", "auth",
                                                  "other"])},
                          optional={"order": json_values, "order_ids": json_values,
                                    "since_seq": json_values, "key": json_values}
                          ).map(json.dumps),
)


def test_no_random_frame_closes_a_websocket(engine: Engine) -> None:
    url = engine.api_url.replace("http://", "ws://") + "/ws"
    headers = {"Authorization": f"Bearer {engine.api_key}"}

    @given(batch=st.lists(frames, min_size=1, max_size=8))
    @settings(max_examples=60, **RELAXED)
    def answered_and_still_open(batch: list[str | bytes]) -> None:
        async def run() -> None:
            async with websockets.connect(url, additional_headers=headers,
                                          max_size=2**22) as ws:
                for frame in batch:
                    await ws.send(frame)
                # Every frame is answered; the connection must still work afterwards.
                await ws.send(json.dumps({"op": "unsubscribe", "order_ids": ["probe"]}))
                while True:
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if reply.get("type") == "unsubscribed" and reply["order_ids"] == ["probe"]:
                        return

        asyncio.run(run())

    answered_and_still_open()
