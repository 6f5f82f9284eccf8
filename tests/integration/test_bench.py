"""`dexec bench` against the running test stack: it counts what the database says."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from dexec.bench import add_arguments, run
from dexec.launch import Engine


def bench_args(engine: Engine, out: Path, *options: str) -> argparse.Namespace:
    """`dexec bench` arguments against the running test stack, writing to `out`."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert engine.settings.database_url is not None
    return parser.parse_args([
        "--url", engine.api_url, "--api-key", engine.api_key or "",
        "--database-url", engine.settings.database_url.get_secret_value(),
        "--out", str(out), *options,
    ])


def test_bench_reports_every_order_with_nothing_lost_or_duplicated(
    engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    assert run(bench_args(engine, out, "--orders", "40", "--concurrency", "8")) == 0
    result = json.loads(out.read_text())
    assert result["accepted"] == 40
    assert result["confirmed"] == 40
    assert result["lost"] == 0
    assert result["duplicate_executions"] == 0
    assert result["throughput"]["accepted_per_s"] > 0
    latency = result["latency_ms"]
    assert 0 < latency["submit_to_confirmed"]["p50"] <= latency["submit_to_confirmed"]["max"]
    for stage in ("queue_wait", "routing", "building", "submitted_to_confirmed"):
        assert latency[stage]["p50"] is not None
    assert result["peak_memory_mb"] > 0
    assert result["machine"]["client_loop"] == "uvloop"  # the default
    # Which priority the client had beside the engine (this process's: no --nice given).
    assert result["machine"]["client_nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    # The stack's own CPU (its Ray processes, PostgreSQL) for what it served.
    assert result["stack_cpu_cores"] > 0 and result["stack_cpu_ms_per_order"] > 0
    assert result["machine"]["speed_probe_ms"] > 0  # the machine's phase during the run


def test_a_repeated_sweep_through_httpx_reports_each_run_and_each_rate(
        engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    assert run(bench_args(engine, out, "--sweep", "10,20", "--duration", "2",
                          "--concurrency", "12", "--client", "httpx", "--repeat", "2")) == 0
    result = json.loads(out.read_text())
    assert result["client"] == "httpx"
    assert result["client_nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert result["repeat"] == 2
    # The rates interleave, so a slow patch of the machine does not fall on one rate only.
    assert [(r["offered_per_s"], r["run"]) for r in result["sweep"]] == [
        (10, 1), (20, 1), (10, 2), (20, 2)]
    assert [(s["offered_per_s"], s["runs"]) for s in result["summary"]] == [(10, 2), (20, 2)]
    for line in result["summary"]:
        assert line["goodput_min_per_s"] <= line["goodput_median_per_s"] \
            <= line["goodput_max_per_s"]
        assert line["lost"] == 0 and line["duplicates"] == 0 and line["errors"] == 0
    assert max(s["of_best_pct"] for s in result["summary"]) == 100
    for row, offered in zip(result["sweep"], (20, 40, 20, 40), strict=True):
        assert row["accepted"] + row["rejected_429"] + row["rejected_503"] == offered
        assert row["lost"] == 0 and row["duplicates"] == 0 and row["errors"] == 0
        assert row["goodput_per_s"] > 0 and row["p50_ms"] is not None


def test_the_raw_client_submits_exactly_the_schedule_even_with_more_submitters_than_orders(
        engine: Engine, tmp_path: Path) -> None:
    # 20/s for 1 s is 20 orders; 30 submitters each take their next order as soon as the
    # last is answered, which once let the run go on past its schedule.
    out = tmp_path / "raw.json"
    assert run(bench_args(engine, out, "--rate", "20", "--duration", "1", "--concurrency",
                          "30", "--client", "raw", "--loop", "asyncio")) == 0
    result = json.loads(out.read_text())
    assert result["machine"]["client_loop"] == "asyncio"
    assert result["accepted"] + result["rejected_429"] + result["rejected_503"] == 20
    assert result["errors"] == 0
    assert result["confirmed"] == result["accepted"] > 0
    assert result["lost"] == 0 and result["duplicate_executions"] == 0


def test_websocket_submitters_past_the_accounts_connection_limit_are_counted(
        engine: Engine, tmp_path: Path) -> None:
    """A connection the engine refuses (429, then closed) is counted, and the bench goes on
    with the others; it used to stop on the close frame with a TypeError."""
    limit = engine.settings.ws_max_connections_per_account
    out = tmp_path / "ws.json"
    # Enough orders that every connection is still open when the last ones connect, and a
    # refused one takes another order after its 429 and finds the connection closed.
    assert run(bench_args(engine, out, "--ws", "--orders", "400",
                          "--concurrency", str(limit + 5))) == 0
    result = json.loads(out.read_text())
    assert result["lost"] == 0 and result["duplicate_executions"] == 0
    assert result["confirmed"] == result["accepted"] > 0
    assert result["rejected_429"] >= 1 and result["errors"] >= 1
    assert result["accepted"] + result["rejected_429"] + result["errors"] == 400
