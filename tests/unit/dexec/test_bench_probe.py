"""The bench's speed probe (the CPU time of one fixed piece of work, at an interval) and its
count of the stack's own CPU between two snapshots."""

from __future__ import annotations

import asyncio
import threading
import time

from dexec.bench import MemorySampler, SpeedProbe


def test_the_probe_times_its_own_threads_cpu_not_the_wall_clock() -> None:
    """Another thread busy in the process stretches the loop's wall time (the GIL), not the
    CPU time of the probe's own thread."""
    alone = min(SpeedProbe.measure() for _ in range(3))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    busy = threading.Thread(target=spin)
    busy.start()
    try:
        started = time.perf_counter()
        shared = SpeedProbe.measure()
        wall_ms = 1000 * (time.perf_counter() - started)
    finally:
        stop.set()
        busy.join()
    assert 0 < shared <= wall_ms
    assert shared < 3 * alone + 20  # its own CPU, about what it takes alone


def test_it_samples_at_its_interval_until_stopped_and_reports_the_median() -> None:
    async def run() -> SpeedProbe:
        probe, stop = SpeedProbe(interval_s=0.05), asyncio.Event()
        task = asyncio.create_task(probe.run(stop))
        await asyncio.sleep(1.0)  # about 15 samples at 0.05 s; a slow machine still makes 3
        stop.set()
        await asyncio.wait_for(task, 5.0)  # a stop ends it; it does not run on
        return probe

    probe = asyncio.run(run())
    assert len(probe.samples_ms) >= 3 and all(ms > 0 for ms in probe.samples_ms)
    ordered = sorted(probe.samples_ms)
    middle = len(ordered) // 2
    expected = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    assert probe.median_ms() == round(expected, 1)
    assert SpeedProbe().median_ms() is None


def test_the_stacks_cpu_counts_this_window_only() -> None:
    since = 1000.0
    before = {(10, 900.0): 5.0, (11, 950.0): 2.0, (12, 990.0): 1.0}
    after = {
        (10, 900.0): 7.5,  # ran through: 2.5 s in the window
        (12, 990.0): 1.0,  # idle
        (20, 1001.0): 0.75,  # started in the window: all of it
        (21, 500.0): 40.0,  # ran before but was missed by the first snapshot: not counted
        (11, 1002.0): 0.25,  # pid 11 reused by a process started in the window
    }  # (11, 950.0) exited in between: its last moments are lost
    assert MemorySampler.cpu_between(before, after, since) == 2.5 + 0.75 + 0.25
