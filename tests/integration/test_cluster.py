"""Workers across a real multi-node Ray cluster (ray.cluster_utils), run in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_workers_spread_over_nodes_and_survive_a_node_leaving(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DEXEC_"))}
    completed = subprocess.run(  # noqa: S603 - our own scenario module
        [sys.executable, "-m", "tests.integration.cluster_scenario", str(out), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    result = json.loads(out.read_text())

    before = set(result["placement_before"].values())
    assert {result["head"], result["leaving"], result["staying"]} <= before, result
    # Every order ended terminal, exactly once, although a node left mid-flight.
    assert result["open_when_node_left"] > 0, "the node left after the orders were done"
    assert result["statuses"] == ["confirmed"], result
    assert result["gapless"] is True
    assert result["executed_per_order"] == [1], result
    # The pool followed the cluster: the leaving node's workers were retired, a joining
    # node got its own.
    assert result["leaving"] not in set(result["placement_after_leave"].values())
    assert result["joined"] in set(result["placement_after_join"].values())
