"""Unit tests for dexec-haproxy: what it changes in Serve's HAProxy configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from dexec.haproxy_guard import MARK, Hardening, config_path, harden, real_haproxy

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


def test_the_config_file_is_the_one_after_dash_f() -> None:
    assert config_path(["-db", "-f", "/x/haproxy.cfg", "-sf", "12"]) == Path("/x/haproxy.cfg")
    assert config_path(["-v"]) is None


def test_hardened_config_is_valid_for_the_real_haproxy(tmp_path: Path) -> None:
    """HAProxy's own check (-c) accepts what the guard writes."""
    import subprocess

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
