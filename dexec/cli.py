"""The `dexec` command: run the engine, submit, cancel and list orders."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.orders import TERMINAL

DEFAULT_URL = "http://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the engine (embedded PostgreSQL, Ray, API)")
    up.add_argument("--address", help="join a running Ray cluster, e.g. `auto`")
    up.add_argument("--port", type=int, help="API port (default 8000, or DEXEC_PORT)")
    up.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    up.add_argument("--zero-latency", action="store_true",
                    help="simulated venues answer at once (tests and benchmarks)")

    localnet = sub.add_parser("localnet", help="run the local Solana cluster alone",
                              add_help=False)
    localnet.add_argument("rest", nargs=argparse.REMAINDER)

    submit = sub.add_parser("submit", help="submit an order: market, or with --limit/--stop")
    submit.add_argument("input_token")
    submit.add_argument("output_token")
    submit.add_argument("amount")
    submit.add_argument("--slippage-bps", type=int, default=50)
    submit.add_argument("--client-order-id")
    submit.add_argument("--watch", action="store_true", help="stream status until terminal")
    submit.add_argument("--dry-run", action="store_true",
                        help="route, build, verify and simulate; never send")
    submit.add_argument("--limit", metavar="PRICE",
                        help="a limit order: at least PRICE output per input (token units)")
    submit.add_argument("--stop", metavar="PRICE",
                        help="a stop order, set off when the price falls to PRICE (with"
                        " --limit: a stop-limit order)")
    submit.add_argument("--tif", choices=("gtc", "gtt", "ioc"),
                        help="time in force of a limit or stop order (default gtc)")
    submit.add_argument("--expires-in", type=float, metavar="SECONDS",
                        help="a gtt order expiring this many seconds from now")
    submit.add_argument("--url", default=DEFAULT_URL)

    cancel = sub.add_parser("cancel", help="cancel an order that has signed nothing yet")
    cancel.add_argument("order_id")
    cancel.add_argument("--url", default=DEFAULT_URL)

    orders = sub.add_parser("orders", help="list recent orders")
    orders.add_argument("--status")
    orders.add_argument("--limit", type=int, default=20)
    orders.add_argument("--url", default=DEFAULT_URL)

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--account", required=True, help="the account its orders belong to")
    create.add_argument("--scope", choices=("trade", "read"), default="trade")
    keys_sub.add_parser("list", help="every key: id, account, scope, created, revoked")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (within seconds everywhere)")
    revoke.add_argument("key_id")

    bench = sub.add_parser("bench", help="benchmark the engine as clients drive it")
    from dexec.bench import add_arguments

    add_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "localnet":
        from gateways.localnet.__main__ import main as localnet_main

        localnet_main(args.rest)
        return 0
    if args.command == "keys":
        return _keys(args)
    if args.command == "bench":
        from dexec.bench import run

        return run(args)
    try:
        if args.command == "submit":
            return asyncio.run(_submit(args))
        if args.command == "cancel":
            return _cancel(args)
        return _orders(args)
    except (OSError, httpx.HTTPError) as exc:
        print(f"cannot reach dexec at {args.url}: {exc}  (is `dexec up` running?)",
              file=sys.stderr)
        return 2


def _up(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from dexec.launch import start_engine, stop_engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    if args.zero_latency:
        settings = settings.zero_latency()
    engine = start_engine(settings, address=args.address, num_cpus=args.num_cpus)
    key = (f"\n  API key    {engine.api_key}  (in {settings.data_dir}/api-key; send it as"
           " `Authorization: Bearer <key>`)") if engine.api_key else ""
    print(f"dexec is up\n  API        {engine.urls['api']}\n  API docs   {engine.urls['docs']}"
          f"\n  dashboard  {engine.urls['dashboard']}{key}\n"
          f"Try: dexec submit SOL USDC 1.5 --watch   (Ctrl-C stops everything)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping...", flush=True)
    stop_engine(engine)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from actors.bootstrap import resolve_database
    from core.accounts import Scope, check_account_name
    from core.errors import InvalidInput
    from core.settings import Settings
    from storage.database import Database
    from storage.keys import KeyStore

    settings, _ = resolve_database(Settings())  # the embedded server stays up for `dexec up`
    if settings.database_url is None:  # pragma: no cover - resolved just above
        return 2
    url = settings.database_url.get_secret_value()

    async def run() -> int:
        db = Database(url, min_size=1, max_size=1)
        await db.open()
        try:
            keys = KeyStore(db)
            if args.keys_command == "create":
                key = await keys.create(check_account_name(args.account), Scope(args.scope))
                print(f"{key.token}\n(key id {key.key_id}, account {args.account},"
                      f" scope {args.scope}: store it now, it is not shown again)")
            elif args.keys_command == "list":
                for k in await keys.list():
                    revoked = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
                    print(f"{k.key_id}  {k.account_id:<24} {k.scope:<6}"
                          f" {k.created_at:%Y-%m-%d %H:%M}  {revoked}")
            elif not await keys.revoke(args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            return 0
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except InvalidInput as exc:
        print(exc.message, file=sys.stderr)
        return 2


def _auth() -> dict[str, str]:
    """Return the Authorization header of this machine's client key (or none)."""
    from actors.bootstrap import client_key
    from core.settings import Settings

    key = client_key(Settings().data_dir)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _order_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "market", "input_mint": args.input_token, "output_mint": args.output_token,
        "amount": args.amount, "slippage_bps": args.slippage_bps,
    }
    if args.client_order_id:
        body["client_order_id"] = args.client_order_id
    if args.dry_run:
        body["dry_run"] = True
    if args.stop is not None:
        body.update(type="stop", trigger_price=args.stop)
    elif args.limit is not None:
        body["type"] = "limit"
    if args.limit is not None:
        body["limit_price"] = args.limit
    if args.expires_in is not None:
        expires = datetime.now(UTC) + timedelta(seconds=args.expires_in)
        body.update(time_in_force="gtt", expires_at=expires.isoformat())
    if args.tif is not None:
        body["time_in_force"] = args.tif
    return body


def _line(event: dict[str, Any]) -> str:
    extras = [f"{k}={event[k]}" for k in ("venue", "signature", "amount_out", "price", "error")
              if event.get(k)]
    return f"{event['at']}  #{event['seq']:<2} {event['status']:<10} attempt {event['attempt']}  " \
           + " ".join(extras)


async def _submit(args: argparse.Namespace) -> int:
    body = _order_body(args)
    if not args.watch:
        async with httpx.AsyncClient(timeout=30, headers=_auth()) as client:
            response = await client.post(f"{args.url}/api/orders", json=body)
        print(json.dumps(response.json(), indent=2))
        return 0 if response.status_code < 400 else 1
    import websockets

    ws_url = args.url.replace("http", "ws", 1) + "/ws"
    async with websockets.connect(ws_url, additional_headers=_auth()) as ws:
        await ws.send(json.dumps({"op": "submit", "order": body}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "error":
                print(f"rejected: {frame['error']}", file=sys.stderr)
                return 1
            if frame["type"] == "accepted":
                order = frame["order"]
                print(f"order {order['order_id']}: {order['amount']} {order['input_token']}"
                      f" -> {order['output_token']}")
                events = order["events"]
            else:
                events = [frame]
            for event in events:
                print(_line(event), flush=True)
                if event["status"] in TERMINAL:
                    return 0 if event["status"] in ("confirmed", "simulated") else 1


def _cancel(args: argparse.Namespace) -> int:
    response = httpx.post(f"{args.url}/api/orders/{args.order_id}/cancel", timeout=30,
                          headers=_auth())
    if response.status_code >= 400:
        print(response.json().get("error", response.text), file=sys.stderr)
        return 1
    order = response.json()
    print(f"order {order['order_id']}: {order['status']}")
    return 0


def _orders(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    response = httpx.get(f"{args.url}/api/orders", params=params, timeout=30,
                         headers=_auth())
    if response.status_code >= 400:
        print(response.json().get("error", response.text), file=sys.stderr)
        return 1
    for o in response.json()["orders"]:
        print(f"{o['created_at'][:19]}  {o['order_id']}  {o['status']:<9}  {o['amount']:>12} "
              f"{o['input_token']:<4} -> {o['amount_out'] or '-':>14} {o['output_token']:<4} "
              f"{o['venue'] or '-':<8} {o['failure_reason'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
