"""Application metrics reach Ray's Prometheus endpoint with plausible values."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import websockets

from dexec.launch import Engine
from tests.integration.client import order_body, wait_terminal

EXPECTED = [
    "dexec_orders_submitted",
    "dexec_orders_finished",
    "dexec_order_latency_seconds",
    "dexec_order_stage_seconds",
    "dexec_orders_waiting",
    "dexec_orders_executing",
    "dexec_venue_call_seconds",
    "dexec_venue_errors",
    "dexec_order_retries",
    "dexec_websocket_connections",
    "dexec_submissions_rejected",
    "dexec_events_published",
    "dexec_batch_calls",
    "dexec_batch_items",
    "dexec_batch_wait_seconds",
    "dexec_batch_call_seconds",
]

# Call sites every order crosses: each process exports its batches' sums per site.
BATCH_SITES = ("submit", "worker_accept", "leases", "order_writes", "chain_quote", "chain_send")


def samples(text: str, name: str) -> list[tuple[str, float]]:
    """Return (labels, value) for every sample of metric `name` (Ray may prefix `ray_`)."""
    pattern = re.compile(rf"^(?:ray_)?{name}(?:_total|_count|_sum|_bucket)?(\{{[^}}]*\}})? (\S+)$")
    return [(m.group(1) or "", float(m.group(2)))
            for line in text.splitlines() if (m := pattern.match(line))]


async def test_prometheus_endpoint_exports_every_application_metric(
    engine: Engine, api: str, ws_url: str, faults: Any
) -> None:
    faults.venue("meteora", fail_next=1)
    faults.venue("raydium", fail_next=1)
    async with httpx.AsyncClient(base_url=api) as client:
        ids = [(await client.post("/api/orders", json=order_body(amount="0.1"))).json()
               ["order_id"] for _ in range(3)]
        for order_id in ids:
            await wait_terminal(client, order_id)
        faults.limits(max_open_orders=0, per_minute=1)
        await client.post("/api/orders", json=order_body(amount="0.1"))
        refused = await client.post("/api/orders", json=order_body(amount="0.1"))
        assert refused.status_code == 429
    url = f"http://127.0.0.1:{engine.settings.metrics_port}/metrics"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "order_ids": ids[:1]}))
        await ws.recv()
        deadline = time.monotonic() + 60
        while True:  # Ray exports every few seconds
            # A frame now and then: a connection that follows nothing and is silent closes.
            await ws.send(json.dumps({"op": "unsubscribe", "order_ids": ids[:1]}))
            await ws.recv()
            async with httpx.AsyncClient(timeout=5) as scraper:
                text = (await scraper.get(url)).text
            missing = [n for n in EXPECTED if not samples(text, n)]
            # Serve's own request metrics, recorded by the replica (HAProxy's per-request
            # datagrams are off by default: DEXEC_HAPROXY_REQUEST_METRICS).
            if not any('application="dexec"' in lb
                       for lb, _ in samples(text, "serve_http_request_latency_ms")):
                missing.append("serve_http_request_latency_ms of the dexec application")
            sites = {labels for labels, _ in samples(text, "dexec_batch_items")}
            missing += [f"site {site}" for site in BATCH_SITES
                        if not any(f'site="{site}"' in lb for lb in sites)]
            open_ws = [v for _, v in samples(text, "dexec_websocket_connections")]
            if not missing and open_ws and max(open_ws) >= 1:
                break
            assert time.monotonic() < deadline, f"missing from {url}: {missing}"
            await asyncio.sleep(1)

    confirmed = [v for labels, v in samples(text, "dexec_orders_finished")
                 if 'status="confirmed"' in labels]
    assert sum(confirmed) >= 3  # one series per worker process: the workers share them
    submitted = [v for labels, v in samples(text, "dexec_orders_submitted")
                 if 'type="market"' in labels]
    assert submitted and max(submitted) >= 4
    retries = [v for labels, v in samples(text, "dexec_order_retries")
               if 'error_class="retryable"' in labels]
    assert retries and max(retries) >= 1
    errors = [labels for labels, _ in samples(text, "dexec_venue_errors")]
    assert any('venue="meteora"' in lb and 'call="quote"' in lb for lb in errors)
    stages = {labels for labels, _ in samples(text, "dexec_order_stage_seconds")}
    for stage in ("pending", "routing", "building", "submitted"):
        assert any(f'stage="{stage}"' in lb for lb in stages), stage
    rejected = [v for _, v in samples(text, "dexec_submissions_rejected")]
    assert rejected and max(rejected) >= 1
    calls = sum(v for _, v in samples(text, "dexec_batch_calls"))
    items = sum(v for _, v in samples(text, "dexec_batch_items"))
    assert 0 < calls <= items
    latency_sum = [v for labels, v in samples(text, "dexec_order_latency_seconds")
                   if labels and 'le=' not in labels]
    assert latency_sum and all(v >= 0 for v in latency_sum)


async def test_readyz_reports_database_manager_and_workers(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] is True
    assert body["checks"]["order_manager"] is True
    assert body["checks"]["workers"] >= 1
