"""The one configuration object, read from DEXEC_* environment variables once per process."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.quotes import VENUES

# Each live network's endpoints. None: no public default (set the URL to use that venue).
NETWORK_DEFAULTS: dict[str, dict[str, str | None]] = {
    "devnet": {
        "rpc": "https://api.devnet.solana.com",
        "raydium_trade": "https://transaction-v1-devnet.raydium.io",
        "raydium_api": "https://api-v3-devnet.raydium.io",
        "meteora_api": None,
    },
    "mainnet-beta": {
        "rpc": "https://api.mainnet-beta.solana.com",
        "raydium_trade": "https://transaction-v1.raydium.io",
        "raydium_api": "https://api-v3.raydium.io",
        "meteora_api": "https://dlmm-api.meteora.ag",
    },
}
LOCALNET_VENUE_PATHS = {"raydium_trade": "/raydium/trade", "raydium_api": "/raydium/api",
                        "meteora_api": "/meteora"}


# The names of this machine's loopback interface.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Every setting of dexec; the README's table lists them."""

    model_config = SettingsConfigDict(env_prefix="DEXEC_", frozen=True, extra="ignore")

    # API
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 64 * 1024
    serve_replicas: int = 1
    proxy_location: str = "EveryNode"  # Serve HTTP proxies: EveryNode, HeadOnly
    # "haproxy": Serve's HAProxy mode (HAProxy in front, each replica serves HTTP itself;
    # about 5x the requests per second here); "serve": Serve's default Python proxy.
    http_proxy: Literal["haproxy", "serve"] = "haproxy"
    access_log: bool = False  # one log line per HTTP request from the ingress replicas
    max_ongoing_requests: int = 10_000
    # Host names accepted besides loopback and `host` ("*": any); Origins that may POST and
    # open /ws besides the API's own (browsers only; other clients send no Origin).
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    ws_max_ids_per_frame: int = Field(default=100, ge=1)  # order ids one (un)subscribe names
    ws_max_subscriptions: int = Field(default=1_000, ge=1)  # live subscriptions per connection
    ws_max_connections_per_account: int = Field(default=100, ge=1)  # per ingress replica
    ws_outbox_frames: int = Field(default=10_000, ge=1)  # a slower reader is closed (1013)
    ws_idle_timeout_s: float = Field(default=300.0, gt=0)  # silent and following nothing
    # HAProxy (http_proxy = "haproxy"), enforced by dexec-haproxy (dexec/haproxy_guard.py):
    http_request_timeout_s: int = Field(default=10, ge=1)  # headers must arrive within this
    http_client_timeout_s: int = Field(default=60, ge=1)  # a client silent mid-request
    ws_tunnel_timeout_s: int = Field(default=3600, ge=1)  # an open WebSocket silent this long
    max_connections_per_address: int = Field(default=1024, ge=0)  # per HAProxy; 0: no limit
    # Front admission of submissions (HAProxy, dexec/haproxy_guard.py): POST /api/orders that
    # one replica works on at once (0: no bound), how many more may wait in HAProxy, and for
    # how long (then 503). Past `ingress_submission_queue` waiting, a new one still waits if
    # fewer than `ingress_submission_burst` arrived to so long a queue in the last second (a
    # burst the engine drains in moments), and is refused with 429 at once otherwise (a
    # standing queue: an overload; 0: always at once). Refusals carry a Retry-After.
    # Small on purpose: at overload a queue is latency, not capacity, and a refusal by HAProxy
    # costs the engine nothing (README, "The front's queue at three times capacity").
    ingress_max_submissions: int = Field(default=32, ge=0)
    ingress_submission_queue: int = Field(default=32, ge=0)
    ingress_submission_queue_timeout_ms: int = Field(default=1000, ge=1)
    ingress_submission_burst: int = Field(default=256, ge=0)
    haproxy_admin_host: str = "127.0.0.1"  # HAProxy's stats page and Prometheus endpoint
    # Serve's per-request HTTP metrics from HAProxy: one log datagram per request, parsed in
    # a Python actor (false: the replicas record the requests they serve; HAProxy's own
    # Prometheus endpoint counts every request at the front, refused ones included).
    haproxy_request_metrics: bool = False
    # HAProxy's threads (Serve's default is 4). On these 2 cores, over one 1,500/s run, HAProxy
    # used 1.35-1.46 s of CPU with 1 thread, 1.78 s with 2 and 2.27 s with 4 (README, the
    # twelfth session). One thread serves tens of thousands of requests a second.
    haproxy_threads: int = Field(default=1, ge=1)
    default_account: str = "default"

    # Storage
    database_url: SecretStr | None = None  # unset: embedded PostgreSQL (pgserver) in data_dir
    data_dir: Path = Path(".dexec")
    db_pool_min: int = 1
    db_pool_max: int = 8

    # Admission (backpressure): refused with 429 before anything is stored
    max_open_orders: int = 20_000  # non-terminal orders at once; 0: unbounded
    account_open_orders: int = 10_000  # non-terminal orders of one account; 0: unbounded
    account_orders_per_minute: int = 120_000  # per account; 0: unlimited
    # Latency-bounded admission (core.limits.LatencyAdmission): a new order is refused with 429
    # and a Retry-After once the orders in flight, at the rate they finish, would take this
    # much longer than an order that waits for nothing; 0: off. Below admission_floor orders
    # in flight, an order is always admitted (a cold engine has measured no rate yet).
    admission_budget_ms: float = Field(default=500.0, ge=0)
    admission_floor: int = Field(default=256, ge=1)
    # A submission past that bound first waits up to this long for an order to finish (its
    # batch holds the ingress's places meanwhile, so the front's bounded queue refuses the
    # rest in HAProxy, at a fraction of what a refusal costs the engine); 0: refused at once.
    admission_wait_ms: float = Field(default=250.0, ge=0)

    # Execution
    # When workers_per_node is 0: a fixed pool spread over the cluster. One per node is the
    # right size: a worker is one async process whose every call is batched, so a second on
    # the same cores only splits the batches (more calls for the same orders).
    workers: int = 1
    workers_per_node: int = 0  # > 0: this many on every alive node, following the cluster
    # Orders one worker executes at once. Executing is mostly waiting for venues, and every
    # call is batched, so thousands are cheap: one worker keeps 5,000 in flight.
    worker_concurrency: int = 5000
    max_attempts: int = 3
    retry_base_delay_s: float = 0.2
    retry_max_delay_s: float = 5.0
    quote_timeout_s: float = 2.0
    # Resting limit and stop orders: each pair they rest on is quoted once per interval (every
    # venue at once), however many orders rest on it (actors.price_watcher).
    price_watch_interval_ms: int = Field(default=500, ge=10, le=60_000)
    confirm_poll_s: float = 0.05  # status polls of all pending swaps travel as one call
    # How long each batched hop (submissions, hand-over, leases, order writes, chain calls)
    # waits for more items. Longer: fewer, larger batches; each hop waits that much longer.
    batch_window_ms: float = Field(default=0.0, ge=0, le=100)
    namespace: str = "dexec"
    # Fault injection and run-time levers (arm_crash, set_faults, set_latency,
    # set_adverse_move_bps, set_limits) answer NotPermitted unless this is on: any Ray client
    # of the cluster could call them. The test suite turns it on.
    test_hooks: bool = False
    # With test_hooks: at each of these steps (routing, signed, sent; a JSON list, e.g.
    # '["routing", "sent"]'), the first worker to bring an order there dies with SIGKILL,
    # once per step and data folder (a test of a `dexec up` process, which no Ray handle
    # from outside reaches; arm_crash is the in-process hook).
    test_crash_once_at: tuple[Literal["routing", "signed", "sent"], ...] = ()
    metrics_port: int = 9464  # Ray's Prometheus endpoint on each node started by `dexec up`

    # Venues
    venues: tuple[str, ...] = VENUES
    venue_rate_limit_per_s: float = 0.0  # 0: unlimited (the simulated venues)
    wallet_keypair: SecretStr | None = None  # base58 secret key; unset: an ephemeral dev wallet
    # Where actors read the database URL and the wallet key: the launcher writes them there
    # (0600) and hands actors settings without them, so no secret is a constructor argument
    # (Ray keeps those in its GCS). Every node must have this file at this path.
    secrets_file: Path | None = None

    # The chain. "sim": the in-process simulated chain (actors.simulated_chain); "localnet":
    # the local Solana cluster (`dexec localnet`, started by `dexec up` when absent);
    # "devnet" / "mainnet-beta": a live cluster at `rpc_url`. Every chain but "sim" is
    # reached the same way, over Solana JSON-RPC (gateways.solana).
    network: Literal["sim", "localnet", "devnet", "mainnet-beta"] = "localnet"
    # Unset: the network's default endpoint. A secret: providers put API keys in the URL.
    rpc_url: SecretStr | None = None
    localnet_port: int = 8899
    localnet_profile: Literal["zero", "realistic"] = "realistic"
    # Faults the local cluster `dexec up` starts injects, e.g. "drop_send_rate=0.05,
    # http_429_rate=0.02,timeout_rate=0.01" (fields of gateways.localnet.server.Faults).
    localnet_faults: str = ""
    # The wallet's public address: set by the launcher from the key (not a secret).
    wallet_address: str | None = None
    # The venues' APIs; unset: the network's (NETWORK_DEFAULTS). On localnet they are the
    # local cluster's own servers, which speak the live APIs' shapes.
    raydium_trade_url: str | None = None  # Raydium Trade API (quotes and swap transactions)
    raydium_api_url: str | None = None  # Raydium API v3 (the priority fee)
    raydium_tx_version: Literal["V0", "LEGACY"] = "V0"
    meteora_api_url: str | None = None  # Meteora's DLMM pool API
    meteora_pairs: tuple[str, ...] = ()  # DLMM pair addresses; empty: the API's best per pair
    # Priority fees (micro-lamports per compute unit): Raydium's auto-fee ("m", "h", "vh")
    # capped at this, which also bounds what a venue-built transaction may charge; 0: none.
    priority_fee_level: Literal["m", "h", "vh"] = "h"
    priority_fee_cap_micro_lamports: int = Field(default=100_000, ge=0, le=50_000_000)
    # Safety caps for real money, by token symbol (or mint) in token units, e.g.
    # '{"SOL": "50", "USDC": "10000"}': what one order may sell, and what all of one UTC day's
    # orders may sell (failed orders and dry runs do not count). Refused with 403.
    max_order_amounts: dict[str, Decimal] = Field(default_factory=dict)
    max_daily_amounts: dict[str, Decimal] = Field(default_factory=dict)
    # What one order may be worth in USD, priced by the quote (a stablecoin side, else a
    # quote of the input for USDC): an order above it fails before anything is signed.
    max_order_usd: Decimal | None = Field(default=None, gt=0)
    # Every order is a dry run: routed, built, verified and simulated, never sent (a whole
    # deployment's switch; an order's own `dry_run` does the same for one order).
    dry_run: bool = False
    # The price of the transactions dexec builds itself (Meteora DLMM swaps).
    priority_fee_micro_lamports: int = Field(default=0, ge=0, le=50_000_000)

    @property
    def rpc_endpoint(self) -> str:
        if self.rpc_url is not None:
            return self.rpc_url.get_secret_value()
        if self.network == "localnet":
            return f"http://127.0.0.1:{self.localnet_port}"
        return NETWORK_DEFAULTS[self.network]["rpc"] or ""

    def venue_url(self, name: str, rpc: str) -> str | None:
        """A venue API's URL (`raydium_trade`, `raydium_api`, `meteora_api`): the setting,
        else the network's default (on localnet, under the local cluster's `rpc` URL)."""
        configured: str | None = getattr(self, f"{name}_url")
        if configured:
            return configured
        if self.network == "localnet":
            return rpc.rstrip("/") + LOCALNET_VENUE_PATHS[name]
        return NETWORK_DEFAULTS.get(self.network, {}).get(name)

    # Simulated chain and venues (the default set-up)
    sim_seed: int = 7
    sim_quote_latency_ms: tuple[int, int] = (50, 200)
    sim_swap_latency_ms: tuple[int, int] = (2000, 3000)
    sim_block_time_ms: int = 400
    sim_blockhash_valid_blocks: int = 150
    sim_drift_interval_s: float = 1.0
    sim_drift_bps: Decimal = Decimal("5")
    sim_fail_rate: float = 0.0  # share of quote/send calls failing with a transient error
    sim_timeout_rate: float = 0.0  # share of quote/send calls that time out
    sim_adverse_move_bps: int = 0  # a front-runner moves the pool this much before each swap
    sim_down_venues: tuple[str, ...] = Field(default=())
    # Processes on the chain's node call it over a loopback socket instead of actor calls
    # (actors/wire.py); false: every call is an actor call.
    sim_wire: bool = True
    # The calls made for every order between the engine's own processes on one node
    # (submissions to the OrderManager, hand-overs to and outcomes from each worker) go over
    # each actor's loopback socket instead of actor calls (actors/wire.py); false: every
    # such call is an actor call. Processes on different nodes always use actor calls.
    actor_wire: bool = True

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000

    def zero_latency(self) -> Settings:
        """Return a copy with simulated latency switched off (tests and benchmarks)."""
        return self.model_copy(
            update={"sim_quote_latency_ms": (0, 0), "sim_swap_latency_ms": (0, 0),
                    "localnet_profile": "zero"}
        )
