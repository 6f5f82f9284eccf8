"""Unit tests for dexec-haproxy: what it changes in Serve's HAProxy configuration."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from dexec.haproxy_guard import MARK, Hardening, config_path, harden, real_haproxy
from dexec.launch import serve_env

# The sections of Serve 2.60's template that the guard touches, as Serve renders them.
SERVE_CONFIG = """global
    log /dev/log local0 info
    stats socket SOCKET_DIR/admin.sock mode 666 level admin expose-fd listeners
    stats timeout 30s
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    log global
frontend prometheus
    bind :8004
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
    default_backend default_backend
backend default_backend
    server replica-1 127.0.0.1:8010 check
listen stats
  bind *:8003
  stats enable
"""


def section(config: str, name: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index(name) + 1
    end = next((i for i in range(start, len(lines)) if lines[i] and not lines[i][0].isspace()),
               len(lines))
    return [line.strip() for line in lines[start:end]]


def test_admin_listeners_bind_the_admin_host_and_the_api_keeps_its_own() -> None:
    hardened = harden(SERVE_CONFIG, Hardening())

    assert "bind 127.0.0.1:8004" in section(hardened, "frontend prometheus")
    assert "bind 127.0.0.1:8003" in section(hardened, "listen stats")
    assert "bind 127.0.0.1:8000" in section(hardened, "frontend http_frontend")
    assert "bind *:" not in hardened and "bind :" not in hardened


def test_an_ipv6_admin_host_is_bracketed() -> None:
    hardened = harden(SERVE_CONFIG, Hardening(admin_host="::1"))
    assert "bind [::1]:8003" in section(hardened, "listen stats")


def test_the_admin_socket_is_private_to_its_user() -> None:
    hardened = harden(SERVE_CONFIG, Hardening())
    (socket,) = [line for line in hardened.splitlines() if "stats socket" in line]
    assert " mode 600 level admin" in socket


def test_defaults_gain_request_and_tunnel_timeouts_that_serve_values_override() -> None:
    hardened = harden(SERVE_CONFIG, Hardening(http_request_timeout_s=7, tunnel_timeout_s=900))
    defaults = section(hardened, "defaults")
    assert defaults[:2] == ["timeout http-request 7s", "timeout tunnel 900s"]
    assert "timeout client 60s" in defaults  # Serve's own lines stay, after ours


def test_one_address_is_refused_past_its_connection_limit() -> None:
    frontend = section(harden(SERVE_CONFIG, Hardening(max_connections_per_address=5)),
                       "frontend http_frontend")
    assert "tcp-request connection track-sc0 src" in frontend
    assert "http-request deny deny_status 429 if { sc_conn_cur(0) gt 5 }" in frontend
    assert frontend.index("tcp-request connection track-sc0 src") < frontend.index(
        "default_backend default_backend")


def test_no_limit_adds_no_tracking() -> None:
    hardened = harden(SERVE_CONFIG, Hardening(max_connections_per_address=0))
    assert "track-sc0" not in hardened


def test_hardening_twice_changes_nothing_more() -> None:
    once = harden(SERVE_CONFIG, Hardening())
    assert once.startswith(MARK)
    assert harden(once, Hardening()) == once


def test_settings_travel_through_the_environment() -> None:
    rules = Hardening(admin_host="10.0.0.5", http_request_timeout_s=3, tunnel_timeout_s=30,
                      max_connections_per_address=9)
    assert Hardening.from_env(rules.env()) == rules
    assert Hardening.from_env({}) == Hardening()


def test_its_own_defaults_are_the_settings_defaults() -> None:
    """The guard keeps its defaults beside the settings (it must start without them); the
    two must not drift apart, or a guard started without the environment hardens less."""
    assert Hardening.from_env(serve_env(Settings.model_construct())) == Hardening()


def test_serves_per_request_haproxy_metrics_are_off_unless_asked_for() -> None:
    """Each request would cost a log datagram parsed in Python by Serve's HAProxy actor."""
    assert serve_env(Settings.model_construct())["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    on = Settings.model_construct(haproxy_request_metrics=True)
    assert serve_env(on)["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"


def test_haproxy_runs_the_threads_the_settings_ask_for() -> None:
    """One thread by default (Serve's default is 4: on 2 cores they cost HAProxy more CPU)."""
    assert serve_env(Settings.model_construct())["RAY_SERVE_HAPROXY_NBTHREAD"] == "1"
    three = Settings.model_construct(haproxy_threads=3)
    assert serve_env(three)["RAY_SERVE_HAPROXY_NBTHREAD"] == "3"


def test_the_config_file_is_the_one_after_dash_f() -> None:
    assert config_path(["-db", "-f", "/x/haproxy.cfg", "-sf", "12"]) == Path("/x/haproxy.cfg")
    assert config_path(["-v"]) is None


def test_hardened_config_is_valid_for_the_real_haproxy(tmp_path: Path) -> None:
    """HAProxy's own check (-c) accepts what the guard writes."""
    config = tmp_path / "haproxy.cfg"
    socket_dir = tmp_path / "s"
    socket_dir.mkdir()
    config.write_text(harden(SERVE_CONFIG.replace("SOCKET_DIR", str(socket_dir))
                             .replace("log /dev/log local0 info", "log stdout local0 info"),
                             Hardening()))
    try:
        binary = real_haproxy()
    except FileNotFoundError:
        pytest.fail("no HAProxy binary: ray[serve] installs one")
    result = subprocess.run([binary, "-c", "-f", str(config)],  # noqa: S603 (our own file)
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


APP_CONFIG = """global
    stats socket SOCKET_DIR/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend http_frontend
    bind 127.0.0.1:FRONT_PORT
    acl is_http-dexec path_beg /
    acl is_http-dexec path /
    use_backend http-dexec if is_http-dexec
    default_backend default_backend
backend default_backend
    http-request return status 404
backend http-dexec
    http-reuse always
    option httpchk GET /-/healthz
    http-check expect status 200
    server SERVE_REPLICA_dexec-1 127.0.0.1:APP_PORT check
"""


def test_submissions_get_their_own_backend_with_a_bound_per_replica() -> None:
    config = harden(APP_CONFIG, Hardening(max_submissions=3, submission_queue=5,
                                          submission_queue_timeout_ms=700))
    front = section(config, "frontend http_frontend")
    assert front.index("use_backend http-dexec-submit if is_http-dexec METH_POST"
                       " { path /api/orders }") < front.index("use_backend http-dexec if"
                                                               " is_http-dexec")
    submit = section(config, "backend http-dexec-submit")
    assert "server SERVE_REPLICA_dexec-1 127.0.0.1:APP_PORT check maxconn 3" in submit
    assert "timeout queue 700ms" in submit
    assert any("queue(http-dexec-submit) gt 5" in line and "sc1_gpc0_rate gt 256" in line
               and "status 429" in line and "Retry-After" in line for line in submit)
    # Reads and WebSockets keep the unbounded backend.
    assert "server SERVE_REPLICA_dexec-1 127.0.0.1:APP_PORT check" in section(
        config, "backend http-dexec")
    assert "-submit" not in harden(APP_CONFIG, Hardening(max_submissions=0))


class SlowApp:
    """A replica stand-in: POST /api/orders answers 202 after `delay_s`, the rest at once."""

    def __init__(self, delay_s: float) -> None:
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self) -> None:
                self._answer(200)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with app.lock:
                    app.served += 1
                time.sleep(app.delay_s)
                self._answer(202)

        self.delay_s = delay_s
        self.served = 0
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _front(tmp_path: Path, app: SlowApp, rules: Hardening) -> Iterator[int]:
    """The real HAProxy, hardened by `rules`, in front of `app`; yields its port. On the
    way out both are stopped."""
    try:
        proc, front = _run_haproxy(tmp_path, app, rules)
        try:
            yield front
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        app.close()


def _run_haproxy(tmp_path: Path, app: SlowApp, rules: Hardening
                 ) -> tuple[subprocess.Popen[bytes], int]:
    socket_dir = tmp_path / "s"
    socket_dir.mkdir(exist_ok=True)
    front = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(harden(APP_CONFIG.replace("SOCKET_DIR", str(socket_dir))
                             .replace("FRONT_PORT", str(front))
                             .replace("APP_PORT", str(app.port)), rules))
    proc = subprocess.Popen([real_haproxy(), "-db", "-f", str(config)],  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{front}/ready", timeout=1)
            return proc, front
        except OSError:
            assert time.monotonic() < deadline, "HAProxy did not start"
            time.sleep(0.05)


async def _post_all(front: int, n: int) -> list[tuple[int, str | None, str]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=30) as client:
        async def post() -> tuple[int, str | None, str]:
            r = await client.post("/api/orders", json={})
            return r.status_code, r.headers.get("Retry-After"), r.text

        return list(await asyncio.gather(*(post() for _ in range(n))))


def _accepted_or_refused_at_once(answers: list[tuple[int, str | None, str]],
                                 app: SlowApp) -> int:
    """Each answer is 202 or 429 with a Retry-After; a refused submission never reached the
    replica. Returns how many were accepted."""
    accepted = [a for a in answers if a[0] == 202]
    refused = [a for a in answers if a[0] == 429]
    assert len(accepted) + len(refused) == len(answers), answers
    assert app.served == len(accepted)
    assert all(r[1] == "1" and "at capacity" in r[2] for r in refused)
    return len(accepted)


def test_the_real_haproxy_refuses_submissions_past_the_bound_at_once(tmp_path: Path) -> None:
    """3 at once per replica, 5 more may wait, no burst allowed: of 20 at once, the rest is
    refused with 429 and a Retry-After without reaching the replica, while reads still pass."""
    # 2 s per submission: on a busy machine the 20 may take over a second to arrive, and
    # a replica that answers sooner frees places for the late ones (seen with 1 s).
    app = SlowApp(delay_s=2.0)
    with _front(tmp_path, app, Hardening(
            max_submissions=3, submission_queue=5, submission_queue_timeout_ms=10_000,
            submission_burst=0)) as front:
        started = time.monotonic()
        answers = asyncio.run(_post_all(front, 20))
        accepted = _accepted_or_refused_at_once(answers, app)
        assert 3 <= accepted <= 3 + 5 + 1  # in service, waiting, one racing the check
        with urllib.request.urlopen(f"http://127.0.0.1:{front}/api/orders/x",
                                    timeout=5) as read:
            assert read.status == 200
        assert time.monotonic() - started < 10


def test_a_burst_past_the_queue_bound_waits_and_is_served(tmp_path: Path) -> None:
    """40 submissions at once to an idle front of 3 places and a queue bound of 5: a burst
    (fewer than 100 arrivals to the long queue in a second), so each waits its turn and
    every one is served, none refused."""
    app = SlowApp(delay_s=0.05)
    with _front(tmp_path, app, Hardening(
            max_submissions=3, submission_queue=5, submission_queue_timeout_ms=10_000,
            submission_burst=100)) as front:
        answers = asyncio.run(_post_all(front, 40))
        assert [a[0] for a in answers] == [202] * 40, answers
        assert app.served == 40


def test_a_queue_that_stays_long_past_the_burst_is_refused_at_once(tmp_path: Path) -> None:
    """3 places, a queue bound of 2 and a burst of 2: the replica takes 2 s a submission, so
    the queue stays long. Past the burst's 2 arrivals to the long queue, the rest of 20 sent
    at once is refused with 429 and a Retry-After, never reaching the replica."""
    app = SlowApp(delay_s=2.0)
    with _front(tmp_path, app, Hardening(
            max_submissions=3, submission_queue=2, submission_queue_timeout_ms=30_000,
            submission_burst=2)) as front:
        started = time.monotonic()
        answers = asyncio.run(_post_all(front, 20))
        accepted = _accepted_or_refused_at_once(answers, app)
        # in service, waiting, the burst's arrivals, one racing each check
        assert 3 <= accepted <= 3 + 2 + 1 + 2 + 1, answers
        assert time.monotonic() - started < 30


def test_a_submission_that_waited_too_long_is_answered_503_with_retry_after(
        tmp_path: Path) -> None:
    app = SlowApp(delay_s=1.5)
    with _front(tmp_path, app, Hardening(
            max_submissions=1, submission_queue=10, submission_queue_timeout_ms=300)) as front:
        answers = asyncio.run(_post_all(front, 3))
        codes = sorted(a[0] for a in answers)
        assert codes == [202, 503, 503], answers
        assert all(a[1] == "1" and "at capacity" in a[2] for a in answers if a[0] == 503)
        assert app.served == 1
