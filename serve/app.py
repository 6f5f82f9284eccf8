"""The ingress deployment: REST and WebSocket routes on one FastAPI app inside Ray Serve."""

import asyncio
import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import ray
from fastapi import Body, Depends, FastAPI, Query, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from actors.batching import Coalescer
from actors.bootstrap import resolve_database, resolve_dev_key, resolve_wallet, seal_secrets
from actors.metrics import IngressMetrics, batch_stats
from actors.notifier import NotifierClient
from actors.shell import (
    ACTOR_GONE,
    CHAIN,
    MANAGER,
    NOTIFIER,
    WiredHandle,
    database_url,
    this_node,
    tune_gc,
)
from actors.stack import start_stack
from actors.tasks import cancel_and_wait
from actors.venue_gateways import chain_rpc, venue_gateways
from actors.wire import WireClosed
from core.accounts import Principal
from core.errors import (
    DexecError,
    InvalidInput,
    NotAuthenticated,
    NotPermitted,
    OrderNotFound,
    Overloaded,
    TransientDatabaseError,
    reason,
)
from core.orders import NewOrder, Order, OrderStatus, Submission
from core.settings import Settings
from core.tokens import TokenRegistry, parse_amount
from gateways.quotes import collect_quotes
from gateways.solana.mints import MintLookup
from gateways.solana.wallet import associated_account
from serve.auth import Authenticator, key_from_header, request_principal
from serve.body_limit import BodyLimit
from serve.browser_rules import BrowserRules, allowed_hosts
from serve.errors import NOT_JSON, error_frame, install_error_handlers
from serve.json_body import DecimalJSONRoute, decode_json
from serve.models import (
    ErrorView,
    HealthView,
    OrderPage,
    OrderRequest,
    OrderView,
    QuotesView,
    ReadyView,
    TokensView,
    WalletView,
    order_json,
    parse_order_request,
    quotes_json,
)
from serve.stream import Connection, Outbox, StreamHub
from storage.keys import KeyStore
from storage.repository import OrderRepository

log = logging.getLogger(__name__)


app = FastAPI(
    title="dexec",
    version="0.1.0",
    description="Order execution engine for Solana DEX swaps: market orders routed to the best"
    " venue, executed exactly once, streamed live.",
    responses={422: {"model": ErrorView, "description": "Invalid request"}},
    # A redirect to the slash-less path would be built from the client's Host header.
    redirect_slashes=False,
)
app.router.route_class = DecimalJSONRoute
app.add_middleware(BodyLimit)
app.add_middleware(BrowserRules)  # the outermost: a refused Host or Origin costs nothing more
install_error_handlers(app)

# Everything the deployment class uses must be defined above it: Serve pickles the class
# when the decorator runs, so later module globals would be missing in the replica.

Limit = Annotated[int, Query(ge=1, le=500, description="Orders per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
StatusFilter = Annotated[OrderStatus | None, Query(description="Only orders in this status.")]
Mint = Annotated[str, Query(description="Symbol (SOL, USDC, ...) or base58 mint.")]
Amount = Annotated[str, Query(description="Amount to sell, in input-token units.")]
OrderBody = Annotated[OrderRequest, Body()]
Caller = Annotated[Principal, Depends(request_principal)]


def _require_trade(caller: Principal) -> None:
    if not caller.can_trade:
        raise NotPermitted("this API key is read-only: submitting needs a trade key")


async def _answers(call: Callable[[], Coroutine[Any, Any, Any]], timeout_s: float = 2.0
                   ) -> bool:
    """Return True when the Ray call made by `call()` completes within the timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            await call()
        return True
    except Exception:  # dead, missing or slow: not ready, whatever the cause
        return False


def _since_seq(raw: object, order_ids: list[str]) -> dict[str, int | None]:
    if raw is None:
        return dict.fromkeys(order_ids)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return dict.fromkeys(order_ids, raw)
    if isinstance(raw, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()
    ):
        return {i: raw.get(i) for i in order_ids}
    raise InvalidInput("since_seq must be a non-negative integer or an object of order id to seq")


@serve.deployment(name="DexecIngress", ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class DexecIngress:
    """One ingress replica; holds a read pool, handles to the actors, and its WebSockets."""

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        self.settings = settings
        self.tokens = TokenRegistry.for_network(settings.network)
        app.state.max_body_bytes = settings.max_body_bytes
        app.state.allowed_hosts = allowed_hosts(settings.host, settings.allowed_hosts)
        app.state.allowed_origins = frozenset(settings.allowed_origins)
        self.repo = OrderRepository(database_url(settings), min_size=settings.db_pool_min,
                                    max_size=settings.db_pool_max)
        self._opened = False
        self._open_lock = asyncio.Lock()
        ns = settings.namespace
        self.manager = ray.get_actor(MANAGER, namespace=ns)
        # Submissions arriving together travel to the OrderManager as one call, over its
        # loopback wire when it runs on this node.
        batches = batch_stats()
        manager = WiredHandle(self.manager, this_node() if settings.actor_wire else None)

        async def submit_many(news: list[NewOrder]) -> list[Submission | DexecError]:
            answers: list[Submission | DexecError] = await manager.call("submit_many", news)
            return answers

        self._submissions: Coalescer[NewOrder, Submission] = Coalescer(
            submit_many, window_s=settings.batch_window_s, site="submit", stats=batches)
        # The ingress only quotes: its gateways hold no wallet and cannot sign.
        self.gateways = venue_gateways(settings, ray.get_actor(CHAIN, namespace=ns), batches,
                                       signing=False)
        # Balances for /api/wallet (a Solana network only; it holds no key): the gateways'
        # own client of the cluster.
        self._rpc = chain_rpc(settings, self.gateways)
        # A mint on no list is read from the chain, not refused (a Solana network only).
        self._mints = MintLookup(self._rpc, self.tokens) if self._rpc is not None else None
        self.hub = StreamHub(NotifierClient(ray.get_actor(NOTIFIER, namespace=ns)), self.repo)
        self.metrics = IngressMetrics()
        self._ws_accounts: Counter[str] = Counter()  # open connections per account, here
        self.keys = KeyStore(self.repo.db)
        self.authenticator = Authenticator(self._principal_of)
        app.state.authenticator = self.authenticator

    async def _learn(self, *refs: object) -> None:
        """Learn the mints among `refs` that no list names (a Solana network only)."""
        if self._mints is not None:
            await self._mints.ensure(r for r in refs if isinstance(r, str))

    async def _views(self, orders: list[Order]) -> list[dict[str, Any]]:
        await self._learn(*(m for o in orders for m in (o.input_mint, o.output_mint)))
        return [order_json(o, self.tokens) for o in orders]

    async def _principal_of(self, key: str) -> Principal | None:
        await self._repo()
        return await self.keys.principal(key)

    async def _repo(self) -> OrderRepository:
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self.repo.open()
                    self._opened = True
        return self.repo

    async def _submit(self, command: NewOrder) -> Submission:
        try:
            return await self._submissions(command)
        except (ACTOR_GONE, WireClosed) as exc:
            raise TransientDatabaseError(
                f"order manager unavailable, retry: {reason(exc)}") from None
        except Overloaded:
            self.metrics.rejected("overloaded")
            raise

    async def _cancel(self, order_id: str, caller: Principal) -> Order:
        _require_trade(caller)
        try:
            answer: Order | DexecError = await self.manager.cancel.remote(order_id,
                                                                         caller.account_id)
        except ACTOR_GONE as exc:
            raise TransientDatabaseError(
                f"order manager unavailable, retry: {reason(exc)}") from None
        if isinstance(answer, DexecError):
            raise answer
        # The answer is the order as cancelled; its view carries its whole history.
        return await (await self._repo()).get_order(order_id) or answer

    # -- REST ------------------------------------------------------------------------------

    @app.post(
        "/api/orders",
        status_code=202,
        summary="Submit an order (market, limit or stop)",
        response_model=OrderView,
        responses={200: {"model": OrderView,
                         "description": "The same client_order_id was submitted before"},
                   409: {"model": ErrorView,
                         "description": "client_order_id reused for a different order"},
                   413: {"model": ErrorView, "description": "Body over 64 KiB"},
                   429: {"model": ErrorView, "description": "Too many open orders or orders"
                         " per minute; see Retry-After"}},
    )
    async def submit_order(self, order: OrderBody, caller: Caller) -> Response:
        _require_trade(caller)
        await self._learn(order.input_mint, order.output_mint)
        command = order.to_command(self.tokens, caller.account_id,
                                   dry_run=self.settings.dry_run)
        stored, created = await self._submit(command)
        return JSONResponse(order_json(stored, self.tokens), status_code=202 if created else 200)

    @app.post(
        "/api/orders/{order_id}/cancel",
        response_model=OrderView,
        summary="Cancel an order that has sent nothing yet (pending, open or routing)",
        responses={404: {"model": ErrorView, "description": "No such order"},
                   409: {"model": ErrorView, "description": "Signed already (building,"
                         " submitted: it finishes normally) or finished"}},
    )
    async def cancel_order(self, order_id: str, caller: Caller) -> Response:
        order = await self._cancel(order_id, caller)
        return JSONResponse((await self._views([order]))[0])

    @app.get("/api/orders/{order_id}", response_model=OrderView,
             summary="One order with its quotes and event history",
             responses={404: {"model": ErrorView, "description": "No such order"}})
    async def get_order(self, order_id: str, caller: Caller) -> Response:
        order = await (await self._repo()).get_order(order_id)
        if order is None or order.account_id != caller.account_id:
            raise OrderNotFound(f"order {order_id} not found")
        return JSONResponse((await self._views([order]))[0])

    @app.get("/api/orders", response_model=OrderPage, summary="Orders, newest first")
    async def list_orders(self, caller: Caller, status: StatusFilter = None,
                          limit: Limit = 50, cursor: Cursor = None) -> Response:
        orders, next_cursor = await (await self._repo()).list_orders(
            caller.account_id, status=status, limit=limit, cursor=cursor
        )
        return JSONResponse({"orders": await self._views(orders),
                      "next_cursor": next_cursor})

    @app.get("/api/quotes", response_model=QuotesView,
             summary="Every venue's quote and the winner; executes nothing")
    async def quotes(self, caller: Caller, input_mint: Mint, output_mint: Mint,
                     amount: Amount) -> Response:
        await self._learn(input_mint, output_mint)
        command = parse_order_request(
            {"type": "market", "input_mint": input_mint, "output_mint": output_mint,
             "amount": amount}, self.tokens, caller.account_id)
        quotes, errors = await collect_quotes(
            self.gateways, command.input_mint, command.output_mint, command.amount_in,
            self.settings.quote_timeout_s)
        return JSONResponse(quotes_json(command, parse_amount(amount), quotes, errors))

    @app.get("/api/tokens", response_model=TokensView, summary="Tokens the engine can trade")
    async def tokens_list(self) -> Response:
        return JSONResponse({"tokens": [{"symbol": t.symbol, "mint": t.mint, "decimals": t.decimals}
                                 for t in self.tokens.tokens]})

    @app.get("/api/wallet", response_model=WalletView,
             summary="The trading wallet: its address and balances")
    async def wallet(self, caller: Caller) -> Response:
        s = self.settings
        view: dict[str, Any] = {"address": s.wallet_address, "network": s.network, "sol": None,
                                "tokens": []}
        if self._rpc is not None and s.wallet_address:
            owner = s.wallet_address
            sol = self.tokens.resolve("SOL")
            view["sol"] = f"{sol.to_ui(await self._rpc.balance(owner)):f}"
            for token in self.tokens.tokens:
                held = await self._rpc.token_balance(associated_account(owner, token.mint))
                if held is not None:
                    view["tokens"].append({"symbol": token.symbol, "mint": token.mint,
                                           "amount": f"{token.to_ui(held):f}"})
        return JSONResponse(view)

    @app.get("/healthz", response_model=HealthView, summary="The ingress process is up")
    async def healthz(self) -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=ReadyView,
             summary="Ready for orders: database, OrderManager and a worker answer",
             responses={503: {"model": ReadyView, "description": "Not ready"}})
    async def readyz(self) -> Response:
        database = False
        with contextlib.suppress(DexecError):
            database = await (await self._repo()).ping()
        names: list[str] = []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                names = await self.manager.worker_names.remote()

        async def ping(name: str) -> Any:
            # ray.get_actor blocks on a GCS lookup: keep it off the event loop.
            handle = await asyncio.to_thread(ray.get_actor, name,
                                             namespace=self.settings.namespace)
            return await handle.ping.remote()

        workers = await asyncio.gather(*(_answers(functools.partial(ping, n)) for n in names))
        checks = {
            "database": database,
            "order_manager": await _answers(lambda: self.manager.stats.remote()),
            "workers": sum(workers),
        }
        ready = bool(checks["database"] and checks["order_manager"] and checks["workers"])
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                     status_code=200 if ready else 503)

    # -- WebSocket -------------------------------------------------------------------------

    @app.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await self._repo()
        s = self.settings
        outbox = Outbox(s.ws_outbox_frames)

        async def enqueue(frame: dict[str, Any]) -> None:
            outbox.put(frame)

        conn = Connection(enqueue)
        caller: Principal | None = None
        counted: str | None = None  # the account this connection counts against
        header_key = key_from_header(websocket.headers.get("authorization"))
        if header_key is not None:
            try:
                caller = await self.authenticator.principal(header_key)
            except DexecError as exc:
                outbox.put(error_frame(exc))
        self.hub.connections += 1
        self.metrics.connections(self.hub.connections)
        loop = asyncio.get_running_loop()
        helpers = [loop.create_task(self._write(websocket, outbox)),
                   loop.create_task(self._close_when_behind(websocket, outbox))]
        try:
            while True:
                if caller is not None and caller.account_id != counted:
                    if not self._count_connection(caller.account_id, counted):
                        # The refusal goes out last, after whatever the writer had sent.
                        await cancel_and_wait(helpers[0])
                        refusal = {"type": "error", "status": 429, "error": (
                            f"account {caller.account_id} has"
                            f" {s.ws_max_connections_per_account} connections open here"
                            " already; close one first")}
                        await websocket.send_text(json.dumps(refusal))
                        await websocket.close(code=1008, reason="too many connections")
                        break
                    counted = caller.account_id
                # A connection that follows nothing and says nothing is closed after a while.
                idle = None if conn.last_seq else s.ws_idle_timeout_s
                try:
                    async with asyncio.timeout(idle):
                        message = await websocket.receive()
                except TimeoutError:
                    await websocket.close(code=1000, reason="idle")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    raw = message.get("text")
                    if raw is None:  # a binary frame: answered, the connection stays open
                        raise InvalidInput("frames must be text: a JSON object with an `op`")
                    caller = await self._handle_frame(conn, raw, caller)
                except DexecError as exc:
                    outbox.put(error_frame(exc))
        except (WebSocketDisconnect, RuntimeError):  # RuntimeError: closed meanwhile
            pass
        finally:
            self._count_connection(None, counted)
            self.hub.connections -= 1
            self.metrics.connections(self.hub.connections)
            self.hub.close(conn)
            await cancel_and_wait(*helpers)

    def _count_connection(self, account: str | None, previous: str | None) -> bool:
        """Move one connection from `previous` to `account`; False if `account` is full."""
        if account is not None:
            if self._ws_accounts[account] >= self.settings.ws_max_connections_per_account:
                return False
            self._ws_accounts[account] += 1
        if previous is not None:
            self._ws_accounts[previous] -= 1
            if not self._ws_accounts[previous]:
                del self._ws_accounts[previous]
        return True

    @staticmethod
    async def _write(websocket: WebSocket, outbox: Outbox) -> None:
        while True:
            frame = await outbox.get()
            await websocket.send_text(json.dumps(frame))

    @staticmethod
    async def _close_when_behind(websocket: WebSocket, outbox: Outbox) -> None:
        await outbox.overflowed.wait()
        # 1013: try again later; the client resumes with since_seq and loses nothing.
        await websocket.close(code=1013, reason="client too slow: resubscribe with since_seq")

    async def _handle_frame(self, conn: Connection, raw: str, caller: Principal | None
                            ) -> Principal | None:
        """Carry out one frame's op; return who the connection acts for afterwards."""
        if len(raw.encode()) > self.settings.max_body_bytes:
            raise InvalidInput(f"frame is larger than {self.settings.max_body_bytes} bytes")
        try:
            message = decode_json(raw)
        except ValueError:
            raise InvalidInput(NOT_JSON) from None
        if not isinstance(message, dict):
            raise InvalidInput("a frame must be a JSON object with an `op`")
        op = message.get("op")
        if op == "auth":
            key = message.get("key")
            caller = await self.authenticator.principal(key if isinstance(key, str) else None)
            await conn.send({"type": "authenticated", "account_id": caller.account_id,
                             "scope": str(caller.scope)})
            return caller
        if caller is None:
            raise NotAuthenticated(
                'authenticate first: send {"op": "auth", "key": "<API key>"} or connect with'
                " the Authorization header")
        if op == "submit":
            _require_trade(caller)
            body = message.get("order")
            if isinstance(body, dict):
                await self._learn(body.get("input_mint"), body.get("output_mint"))
            command = parse_order_request(body, self.tokens, caller.account_id,
                                          dry_run=self.settings.dry_run)
            order, _ = await self._submit(command)
            await conn.send({"type": "accepted", "order": order_json(order, self.tokens)})
            await self.hub.subscribe(conn, order.order_id, order.seq)
            return caller
        if op == "cancel":
            order_id = message.get("order_id")
            if not isinstance(order_id, str):
                raise InvalidInput("order_id must be an order id string")
            order = await self._cancel(order_id, caller)
            (view,) = await self._views([order])
            await conn.send({"type": "cancelled", "order": view})
            return caller
        if op in ("subscribe", "unsubscribe"):
            order_ids = message.get("order_ids")
            if (not isinstance(order_ids, list) or not order_ids
                    or not all(isinstance(i, str) for i in order_ids)):
                raise InvalidInput("order_ids must be a non-empty list of order id strings")
            limit = self.settings.ws_max_ids_per_frame
            if len(order_ids) > limit:
                raise InvalidInput(f"order_ids names {len(order_ids)} orders; at most {limit}"
                                   " a frame")
            if op == "unsubscribe":
                await self.hub.unsubscribe(conn, order_ids)
                await conn.send({"type": "unsubscribed", "order_ids": order_ids})
                return caller
            since = _since_seq(message.get("since_seq"), order_ids)
            new = set(order_ids) - set(conn.last_seq)
            if len(conn.last_seq) + len(new) > self.settings.ws_max_subscriptions:
                raise InvalidInput(
                    f"a connection follows at most {self.settings.ws_max_subscriptions} orders;"
                    " unsubscribe from some first")
            for order_id in order_ids:
                current = await self.repo.get_order(order_id)
                if current is None or current.account_id != caller.account_id:
                    await conn.send({"type": "error", "error": f"order {order_id} not found",
                                     "order_id": order_id, "status": 404})
                    continue
                after = since.get(order_id)
                if after is None:
                    (view,) = await self._views([current])
                    await conn.send({"type": "state", "order": view})
                    after = current.seq
                await self.hub.subscribe(conn, order_id, after)
            return caller
        raise InvalidInput("op must be one of auth, submit, cancel, subscribe, unsubscribe")


def ingress_app(settings: Settings) -> Application:
    """Return the ingress deployment bound to resolved settings (the actors already run)."""
    return DexecIngress.options(  # type: ignore[attr-defined,no-any-return]
        num_replicas=settings.serve_replicas, max_ongoing_requests=settings.max_ongoing_requests,
        logging_config={"enable_access_log": settings.access_log},
    ).bind(settings)


def build_app(args: dict[str, Any]) -> Application:
    """Build the application for `serve deploy serve_config.yaml` or `serve run`.

    Settings come from DEXEC_* environment variables; `args` overrides them. The actors are
    created (or found) here, before the ingress deployment is returned.
    """
    settings, _embedded = resolve_database(Settings(**args))
    settings = resolve_wallet(settings)
    resolve_dev_key(settings)
    sealed = seal_secrets(settings)
    start_stack(sealed)
    return ingress_app(sealed)
