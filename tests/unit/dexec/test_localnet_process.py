"""`dexec up`'s local cluster process: started with the faults its settings name, refused
with a clear error when they name none it knows, and stopped with its process group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from dexec.localnet import EmbeddedLocalnet
from tests.kit.localnet import free_port


def test_the_cluster_injects_the_faults_its_settings_name(tmp_path: Path) -> None:
    localnet = EmbeddedLocalnet(tmp_path, free_port(), "zero", faults="http_429_rate=0.5")
    url = localnet.start()  # its health check retries through the faults
    try:
        codes = [httpx.post(url, json={"jsonrpc": "2.0", "id": i, "method": "getSlot"},
                            timeout=5.0).status_code for i in range(60)]
    finally:
        localnet.stop()
    assert set(codes) == {200, 429}
    assert 10 <= codes.count(429) <= 50, codes
    pid = int((tmp_path / "localnet" / "pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_an_unknown_fault_is_refused_before_the_cluster_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateways.localnet", "--faults", "drop_everything=1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "unknown fault 'drop_everything'" in done.stderr
