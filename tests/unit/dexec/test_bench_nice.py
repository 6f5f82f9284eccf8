"""The bench reports the load client's niceness: what it is, not what was asked for."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_client_niceness_is_the_processs_own() -> None:
    here = os.getpriority(os.PRIO_PROCESS, 0)
    shown = subprocess.run(
        [sys.executable, "-c",
         "import os; os.nice(3); from dexec.bench import client_nice; print(client_nice())"],
        capture_output=True, text=True, check=True, timeout=60)
    assert int(shown.stdout) == min(19, here + 3)
