"""`dexec bench --limit-orders N`: N resting limit orders set off by one price move.

The benchmark rests N limit orders (SOL -> USDC, 0.01 SOL each) 2% above the best price and
waits until every one is `open`. It counts the price watcher's pair quotes for a few seconds:
what the resting orders cost the venues (one pair, however many orders). Then it moves the
pair's price up 5% on every venue (the simulated chain's test hook) and times the price
watcher, from the quote that crossed them to the last order's `routing` event. Every order
then executes; the record shows each one once (lost and duplicate counts as in every other
run).
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal
from typing import Any

from storage.reports import count_terminal, outcomes, resting_report

PAIR = ("SOL", "USDC", "0.01")
DECIMALS = {"SOL": 9, "USDC": 6}
MOVE_BPS = 500
QUOTE_WINDOW_S = 5.0


async def _wait(what: str, done: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while True:
        state: dict[str, Any] = await done()
        if state.pop("done"):
            return state
        if time.time() > deadline:
            raise TimeoutError(f"{what}: still {state} after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


async def run_limit_orders(n: int, url: str, api_key: str | None, database_url: str,
                           chain: Any, manager: Any, run_id: str, *, concurrency: int,
                           drain_timeout_s: float) -> dict[str, Any]:
    import aiohttp

    prefix = f"bench-{run_id}-limit-"
    x, y, amount = PAIR
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     headers=auth) as session:
        params = {"input_mint": x, "output_mint": y, "amount": amount}
        async with session.get(f"{url}/api/quotes", params=params) as response:
            best = (await response.json())["best"]
        price = (Decimal(best["amount_out"]).scaleb(-DECIMALS[y])
                 / Decimal(best["amount_in"]).scaleb(-DECIMALS[x]))
        limit = (price * Decimal("1.02")).quantize(Decimal("1e-6"))
        print(f"resting {n} limit orders {amount} {x} -> {y} at {limit} (best {price:.6f})",
              file=sys.stderr)
        indices = iter(range(n))
        started = time.time()

        async def submitter() -> None:
            nonlocal accepted
            for i in indices:
                body = {"type": "limit", "input_mint": x, "output_mint": y, "amount": amount,
                        "limit_price": str(limit), "slippage_bps": 100,
                        "client_order_id": f"{prefix}{i}"}
                while True:
                    async with session.post(f"{url}/api/orders", json=body) as response:
                        if response.status in (200, 202):
                            accepted += 1
                            break
                        if response.status not in (429, 503):
                            raise RuntimeError(f"{response.status}: {await response.text()}")
                    await asyncio.sleep(0.5)  # refused for load: submit it again

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submit_s = time.time() - started

    async def all_open() -> dict[str, Any]:
        report = await resting_report(database_url, prefix)
        return {"done": report["open"] >= accepted, "open": report["open"]}

    await _wait("resting", all_open, 120)
    # What the resting orders cost the venues: the watcher's pair quotes over a few seconds.
    before, watched_from = (await manager.stats.remote())["price_quotes"], time.time()
    await asyncio.sleep(QUOTE_WINDOW_S)
    quotes_per_s = ((await manager.stats.remote())["price_quotes"] - before) / (
        time.time() - watched_from)
    print(f"{accepted} open after {time.time() - started:.1f}s; moving the price"
          f" {MOVE_BPS} bps", file=sys.stderr)
    moved_at = time.time()
    await chain.move_pair.remote(x, y, MOVE_BPS)

    async def all_triggered() -> dict[str, Any]:
        report = await resting_report(database_url, prefix)
        return {"done": report["triggered"] >= accepted, **report}

    report = await _wait("triggering", all_triggered, 120)

    async def trigger_known() -> dict[str, Any]:
        # The watcher records the move once it has followed every order it wrote.
        trigger: dict[str, Any] = await manager.last_trigger.remote()
        return {"done": bool(trigger.get("written_at")), **trigger}

    trigger = await _wait("the watcher's record", trigger_known, 30)
    quoted_at = float(trigger.get("quoted_at") or 0) or None

    async def all_terminal() -> dict[str, Any]:
        ended = await count_terminal(database_url, prefix)  # a count, polled: not outcomes()
        return {"done": ended >= accepted, "terminal": ended}

    await _wait("executing", all_terminal, drain_timeout_s)
    found = await outcomes(database_url, prefix)
    statuses: dict[str, int] = {}
    for order in found.values():
        statuses[order["status"]] = statuses.get(order["status"], 0) + 1
    last = report["last_routing_at"]
    return {
        "limit_orders": accepted,
        "submit_s": round(submit_s, 2),
        "pair_quotes_per_s_while_resting": round(quotes_per_s, 2),
        "price_moved_to_crossing_quote_ms": (round((quoted_at - moved_at) * 1000, 1)
                                             if quoted_at else None),
        "crossing_quote_to_first_routing_ms": (round((report["first_routing_at"] - quoted_at)
                                                     * 1000, 1) if quoted_at else None),
        "crossing_quote_to_last_routing_ms": (round((last - quoted_at) * 1000, 1)
                                              if quoted_at and last else None),
        # Event times are taken as each write starts; this is when the last one committed.
        "crossing_quote_to_last_routing_committed_ms": (
            round((float(trigger["written_at"]) - quoted_at) * 1000, 1)
            if quoted_at and trigger.get("written_at") else None),
        "trigger_writes_s": trigger.get("written_s"),
        "triggered_in_one_move": trigger.get("orders"),
        "statuses": statuses,
        "lost": accepted - len(found) + sum(1 for o in found.values()
                                            if o["status"] not in ("confirmed", "failed")),
        "duplicate_executions": sum(1 for o in found.values() if o["executed"] > 1),
    }
