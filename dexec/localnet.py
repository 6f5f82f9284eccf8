"""The local Solana cluster beside `dexec up`: joined when it runs, started when it does not.

Like the embedded PostgreSQL it runs in a session of its own (a crash of the engine leaves it
up, as a real cluster would be) and keeps its state in the data folder, so the next start
finds the same chain. `stop()` stops only a cluster this handle started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


def healthy(url: str) -> bool:
    try:
        answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
                            timeout=1.0)
        return answer.status_code == 200 and answer.json().get("result") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


class EmbeddedLocalnet:
    """Start (or join) `python -m gateways.localnet` on a loopback port."""

    def __init__(self, data_dir: Path, port: int, profile: str, *, faults: str = "",
                 test_hooks: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve() / "localnet"
        self.port = port
        self.profile = profile
        self.url = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._test_hooks = test_hooks
        self._faults = faults

    def start(self, timeout_s: float = 60.0) -> str:
        if healthy(self.url):
            log.info("joining the local Solana cluster at %s", self.url)
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "localnet.log").open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 (this Python, our module)
                [sys.executable, "-m", "gateways.localnet", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--profile", self.profile,
                 *(["--faults", self._faults] if self._faults else []),
                 *(["--test-hooks"] if self._test_hooks else [])],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (self.data_dir / "pid").write_text(str(self._proc.pid))
        deadline = time.monotonic() + timeout_s
        while not healthy(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_tail = (self.data_dir / "localnet.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"the local Solana cluster did not start:\n{log_tail}")
            time.sleep(0.1)
        log.info("local Solana cluster started at %s (%s)", self.url, self.data_dir)
        return self.url

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def fund_dev_wallet(url: str, owner: str, *, sol: int = 1_000,
                    tokens: dict[str, str] | None = None) -> None:
    """Give the dev wallet SOL (requestAirdrop) and tokens (the faucet) when it runs low."""
    balance = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getBalance",
                                    "params": [owner]}, timeout=5.0).json()["result"]["value"]
    if balance >= sol * 10**9 // 10:
        return
    httpx.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "requestAirdrop",
                          "params": [owner, sol * 10**9]}, timeout=5.0).raise_for_status()
    grants = tokens or {"USDC": "1000000", "USDT": "1000000", "RAY": "1000000"}
    httpx.post(f"{url}/localnet/fund", json={"owner": owner, "tokens": grants},
               timeout=5.0).raise_for_status()
    log.info("funded the dev wallet %s on the local cluster", owner)
