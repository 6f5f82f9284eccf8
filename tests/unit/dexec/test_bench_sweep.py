"""The sweep's summary of repeated runs: medians, the spread, and the share of the best."""

from __future__ import annotations

from typing import Any

from dexec.bench import sweep_summary


def row(offered: float, goodput: float, p99: float | None = 100.0, *, lost: int = 0,
        refused: int = 0, stack_ms: float | None = 3.0) -> dict[str, Any]:
    return {"offered_per_s": offered, "accepted": 10, "rejected_429": refused,
            "rejected_503": 0, "errors": 0, "goodput_per_s": goodput, "p50_ms": 50.0,
            "p99_ms": p99, "submit_p99_ms": 5.0, "client_cpu_pct": 10,
            "stack_ms_per_order": stack_ms, "probe_ms": 20.0, "lost": lost, "duplicates": 0}


def test_each_rate_gets_its_median_and_range_in_the_order_it_was_run() -> None:
    rows = [row(300, 290), row(900, 200), row(300, 250), row(900, 260), row(300, 300),
            row(900, 280)]
    summary = sweep_summary(rows)
    assert [s["offered_per_s"] for s in summary] == [300, 900]
    first, second = summary
    assert (first["runs"], first["goodput_median_per_s"], first["goodput_min_per_s"],
            first["goodput_max_per_s"]) == (3, 290, 250, 300)
    assert (second["goodput_median_per_s"], second["goodput_min_per_s"],
            second["goodput_max_per_s"]) == (260, 200, 280)


def test_the_share_of_the_best_compares_medians_not_the_luckiest_run() -> None:
    # 900/s had the single best run (400/s), but its median is below 300/s's.
    rows = [row(300, 300), row(300, 300), row(900, 400), row(900, 200), row(900, 210)]
    first, second = sweep_summary(rows)
    assert first["of_best_pct"] == 100
    assert second["of_best_pct"] == 70  # 210 of 300


def test_an_even_number_of_runs_takes_the_middle_two_and_unknown_latencies_are_skipped() -> None:
    (line,) = sweep_summary([row(100, 90, p99=None), row(100, 100, p99=200.0),
                             row(100, 96, p99=300.0), row(100, 98, p99=None)])
    assert line["goodput_median_per_s"] == 97.0
    assert line["p99_median_ms"] == 250.0


def test_the_stacks_cpu_per_order_is_a_median_too() -> None:
    (line,) = sweep_summary([row(900, 400, stack_ms=3.0), row(900, 380, stack_ms=4.0),
                             row(900, 390, stack_ms=None)])
    assert line["stack_ms_per_order_median"] == 3.5


def test_losses_and_refusals_are_summed_over_runs() -> None:
    (line,) = sweep_summary([row(600, 250, lost=1, refused=3), row(600, 260, refused=4)])
    assert line["lost"] == 1
    assert line["refused"] == 7


def test_no_goodput_at_all_gives_no_share() -> None:
    (line,) = sweep_summary([row(100, 0.0)])
    assert line["of_best_pct"] is None
