"""A whole `dexec up` process (its own Ray, data folder and port), for tests that need one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

PORT = 18_100


class App:
    """One `dexec up` process group with its own data folder, port and Ray."""

    def __init__(self, data_dir: Path, *, port: int = PORT, namespace: str = "dexec-restart",
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DEXEC_"))}
        self.env.update({
            "DEXEC_DATA_DIR": str(data_dir),
            "DEXEC_PORT": str(port),
            "DEXEC_NAMESPACE": namespace,
            "DEXEC_NETWORK": "sim",  # env may choose another
            "DEXEC_SIM_QUOTE_LATENCY_MS": "[0,20]",
            # Swaps take long enough that the kill surely finds orders in flight.
            "DEXEC_SIM_SWAP_LATENCY_MS": "[1500,3000]",
            "DEXEC_SIM_BLOCK_TIME_MS": "100",
            "DEXEC_SIM_BLOCKHASH_VALID_BLOCKS": "50",
            "DEXEC_CONFIRM_POLL_S": "0.05",
            "DEXEC_RETRY_BASE_DELAY_S": "0.05",
            **(env or {}),
        })

    def auth(self) -> dict[str, str]:
        """The dev key `dexec up` wrote to its data directory (the same across restarts)."""
        key = (self.data_dir / "api-key").read_text().strip()
        return {"Authorization": f"Bearer {key}"}

    def start(self, log_name: str) -> None:
        log = (self.data_dir / log_name).open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dexec.cli", "up", "--num-cpus", "2"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / log_name).read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("dexec up did not become healthy")

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        # Ray's worker processes (the HTTP proxy among them) notice their raylet is gone
        # within seconds; wait until nothing of the old app answers any more.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
            except httpx.HTTPError:
                return
            time.sleep(0.2)
        raise AssertionError("the killed app still answers")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def database(self) -> psycopg.Connection[Any]:
        host = self.data_dir / "pgdata"
        return psycopg.connect(f"postgresql://postgres:@/postgres?host={host}", autocommit=True)
