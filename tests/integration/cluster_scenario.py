"""A three-node Ray cluster on this machine: workers spread, a node leaves mid-flight, one joins.

Run by test_cluster.py in its own process (a process holds one Ray connection, and the test
session already has one): `python -m tests.integration.cluster_scenario OUT.json DATA_DIR`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import ray
from ray.cluster_utils import Cluster

from actors.shell import MANAGER
from core.settings import Settings
from dexec.launch import start_engine, stop_engine
from tests.integration.client import WITHIN_FRONT

TERMINAL = ("confirmed", "failed")


def placement(namespace: str) -> dict[str, str]:
    manager = ray.get_actor(MANAGER, namespace=namespace)
    names = ray.get(manager.worker_names.remote())
    return {n: ray.get(ray.get_actor(n, namespace=namespace).node_id.remote()) for n in names}


def wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


async def submit_and_track(url: str, key: str | None, count: int, during: Any
                           ) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth,
                                 limits=WITHIN_FRONT) as client:
        responses = await asyncio.gather(*(client.post("/api/orders", json={
            "type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "0.02",
            "client_order_id": f"cluster-{i}"}) for i in range(count)))
        assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
        ids = [r.json()["order_id"] for r in responses]
        await asyncio.to_thread(during)
        orders = []
        deadline = time.monotonic() + 180
        for order_id in ids:
            while True:
                try:
                    order = (await client.get(f"/api/orders/{order_id}")).json()
                    if order.get("status") in TERMINAL:
                        orders.append(order)
                        break
                except (httpx.HTTPError, ValueError):
                    pass  # the ingress may be moving off the removed node
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{order_id} not terminal")
                await asyncio.sleep(0.1)
        return orders


def main(out: Path, data_dir: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    leaving = cluster.add_node(num_cpus=1)
    staying = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    result: dict[str, Any] = {
        "head": cluster.head_node.node_id, "leaving": leaving.node_id,
        "staying": staying.node_id,
    }
    settings = Settings(
        data_dir=data_dir, port=18_300, namespace="dexec-cluster", workers_per_node=1,
        network="sim",
        proxy_location="HeadOnly", sim_quote_latency_ms=(0, 20), sim_swap_latency_ms=(300, 900),
        confirm_poll_s=0.05, retry_base_delay_s=0.05, sim_block_time_ms=100,
        sim_blockhash_valid_blocks=50,
    )
    started = time.monotonic()
    engine = start_engine(settings, address=cluster.address, dashboard=False)
    result["engine_start_s"] = round(time.monotonic() - started, 1)
    try:
        ns = settings.namespace
        result["placement_before"] = placement(ns)

        assert engine.settings.database_url is not None
        url = engine.settings.database_url.get_secret_value()

        def remove_node() -> None:
            with psycopg.connect(url) as db:
                row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN"
                                 " ('confirmed', 'failed')").fetchone()
            result["open_when_node_left"] = row[0] if row else 0
            cluster.remove_node(leaving)

        orders = asyncio.run(submit_and_track(engine.api_url, engine.api_key, 100, remove_node))
        result["statuses"] = sorted({o["status"] for o in orders})
        result["gapless"] = all(
            [e["seq"] for e in o["events"]] == list(range(1, len(o["events"]) + 1))
            for o in orders)
        with psycopg.connect(url) as db:
            result["executed_per_order"] = sorted({int(r[0]) for r in db.execute(
                "SELECT count(t.signature) FROM orders o LEFT JOIN swap_transactions s"
                " USING (order_id) LEFT JOIN simchain.transactions t ON t.signature ="
                " s.signature AND t.state = 'confirmed' WHERE o.client_order_id LIKE"
                " 'cluster-%' GROUP BY o.order_id")})
        wait_for(lambda: leaving.node_id not in placement(ns).values(), 30)
        result["placement_after_leave"] = placement(ns)
        joined = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        result["joined"] = joined.node_id
        wait_for(lambda: joined.node_id in placement(ns).values(), 30)
        result["placement_after_join"] = placement(ns)
    finally:
        stop_engine(engine)
        cluster.shutdown()
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
