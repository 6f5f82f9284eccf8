"""The stack `dexec bench` starts, run in a process of its own.

The process that starts a stack is its Ray driver, and Ray's own threads there share the
GIL with whatever else runs in it. A load client in that process made the engine look slower
than it is: on 2026-12-01, the same stack (the same settings) at 100/s for 30 s gave p50 / p99
submit→confirmed 29.4 / 184.0 ms driven from its driver's process, and 15.5 / 144.3 ms driven
from a process of its own (the front's submit p99 79.5 against 38.3 ms). So the bench starts
the stack here, as `dexec up` would, and drives it over its URL.

    python -m dexec.bench_stack '<Settings keyword arguments as JSON>' [zero]

It writes `bench-stack.json` (0600: the API key and the database URL) in the data folder once
the stack answers, and stops the stack on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

READY_FILE = "bench-stack.json"


def start_stack(spec: dict[str, Any], *, zero: bool) -> tuple[Any, dict[str, Any]]:
    """Start the bench's stack in this process (`spec`: Settings keyword arguments; `zero`:
    zero-latency venues); return the engine and what a client needs of it."""
    from core.settings import Settings
    from dexec.launch import start_engine

    settings = Settings(**spec)
    if zero:
        settings = settings.zero_latency()
    engine = start_engine(settings, num_cpus=2, dashboard=False)
    assert engine.settings.database_url is not None  # noqa: S101 - resolved at start
    return engine, {"url": engine.api_url, "api_key": engine.api_key,
                    "database_url": engine.settings.database_url.get_secret_value(),
                    "rpc_url": engine.settings.rpc_endpoint
                    if engine.settings.network != "sim" else None}


def main(argv: list[str]) -> int:
    from dexec.launch import stop_engine

    spec: dict[str, Any] = json.loads(argv[0])
    stop = signal.SIGTERM, signal.SIGINT
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # taken by sigwait below, never lost
    engine, ready = start_stack(spec, zero="zero" in argv[1:])
    try:
        path = Path(spec["data_dir"]) / READY_FILE
        fd = os.open(path.with_suffix(".tmp"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(ready, f)
        os.replace(path.with_suffix(".tmp"), path)
        signal.sigwait(stop)
    finally:
        stop_engine(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
