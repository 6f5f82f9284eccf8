"""Shared by every test.

The helpers of tests/kit assert with pytest's detailed messages. One engine per test session
(embedded PostgreSQL, a local Ray with 2 CPUs, zero latency) for the tests that ask for it
(tests/integration, and the tests/security cases that need a running engine); those are
marked `integration`, so `-m "not integration"` runs everything else in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from actors.shell import CHAIN, MANAGER
from core.settings import Settings
from dexec.launch import Engine, start_engine, stop_engine

pytest.register_assert_rewrite("tests.kit")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    data_dir: Path = tmp_path_factory.mktemp("dexec")
    settings = Settings(
        data_dir=data_dir,
        port=18_000,
        metrics_port=18_264,
        workers=2,
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
        confirm_poll_s=0.02,
        sim_drift_interval_s=0.5,
        namespace="dexec-test",
        # The suite's shared engine runs on the simulated chain, whose faults, latency and
        # price moves the tests steer; tests/integration/test_localnet.py covers the local
        # Solana cluster with `dexec up` processes of its own.
        network="sim",
        test_hooks=True,
        ws_idle_timeout_s=5.0,  # short, so that tests/security can watch it close
        http_request_timeout_s=2,  # short, so that tests/security can watch a slow client go
        max_connections_per_address=300,
    ).zero_latency()
    running = start_engine(settings, num_cpus=2, dashboard=False)
    yield running
    stop_engine(running)


def with_key(url: str, key: str | None) -> str:
    """Return `url` carrying `key` as its password: httpx and websockets send it as Basic
    credentials, which the API accepts beside `Authorization: Bearer`."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://dexec:{key}@{rest}" if key else url


@pytest.fixture
def api(engine: Engine) -> str:
    """The API's URL with the dev key of the session's engine (a trade key, account default)."""
    return with_key(engine.api_url, engine.api_key)


@pytest.fixture
def ws_url(engine: Engine) -> str:
    return with_key(engine.api_url.replace("http://", "ws://") + "/ws", engine.api_key)


@pytest.fixture
def db(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    assert engine.settings.database_url is not None
    with psycopg.connect(engine.settings.database_url.get_secret_value(), autocommit=True) as c:
        yield c


@pytest.fixture
def faults(engine: Engine) -> Iterator[Any]:
    """Set failure injection on a venue or the chain; everything is reset after the test."""
    ns = engine.settings.namespace

    class Faults:
        def venue(self, venue: str, **changes: Any) -> None:
            ray.get(ray.get_actor(CHAIN, namespace=ns).set_faults.remote(venue, **changes))

        def adverse_move(self, bps: int) -> None:
            ray.get(ray.get_actor(CHAIN, namespace=ns).set_adverse_move_bps.remote(bps))

        def latency(self, quote_ms: tuple[int, int], swap_ms: tuple[int, int]) -> None:
            ray.get(ray.get_actor(CHAIN, namespace=ns).set_latency.remote(quote_ms, swap_ms))

        def limits(self, max_open_orders: int, per_minute: int,
                   account_open_orders: int = 0, admission_budget_ms: float | None = None,
                   admission_floor: int | None = None) -> None:
            ray.get(ray.get_actor(MANAGER, namespace=ns).set_limits.remote(
                max_open_orders, account_open_orders, per_minute,
                admission_budget_ms, admission_floor))

    injector = Faults()
    yield injector
    for venue in engine.settings.venues:
        injector.venue(venue, down=False, fail_next=0, fail_rate=0.0, timeout_rate=0.0)
    injector.adverse_move(0)
    injector.latency((0, 0), (0, 0))
    s = engine.settings
    injector.limits(s.max_open_orders, s.account_orders_per_minute, s.account_open_orders,
                    s.admission_budget_ms, s.admission_floor)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the engine, or lives in tests/integration, `integration`,
    and run those first, whatever order the paths were given in.

    After the local-cluster unit tests (tests/unit/gateways/localnet and .../solana, LiteSVM
    in this process), starting Ray in the same process aborts it (std::bad_alloc at the
    first actor; seen 2026-11-30, cause not found). The default order already puts
    tests/integration first; this keeps `pytest tests/unit tests/integration` working too.
    """
    integration = Path(__file__).parent / "integration"
    for item in items:
        needs_engine = "engine" in getattr(item, "fixturenames", ())
        if needs_engine or integration in item.path.parents:
            item.add_marker(pytest.mark.integration)
    # Stable: each group keeps its order.
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
