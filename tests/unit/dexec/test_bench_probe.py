"""The bench's speed probe: the CPU time of one fixed piece of work, once a second."""

from __future__ import annotations

import asyncio
import time

from dexec.bench import SpeedProbe


def test_the_probe_times_its_own_threads_cpu_not_the_wall_clock() -> None:
    # Another busy thread in the process would stretch the wall time of the loop (the GIL),
    # not its own thread's CPU time.
    assert 0 < SpeedProbe.measure() < 5_000


def test_it_samples_until_stopped_and_reports_the_median() -> None:
    async def run() -> SpeedProbe:
        probe, stop = SpeedProbe(), asyncio.Event()
        task = asyncio.create_task(probe.run(stop))
        await asyncio.sleep(1.3)  # one sample at once, one a second later
        stop.set()
        started = time.monotonic()
        await task
        assert time.monotonic() - started < 1.0  # a stop does not wait out the second
        return probe

    probe = asyncio.run(run())
    assert len(probe.samples_ms) == 2
    assert probe.median_ms() == round((probe.samples_ms[0] + probe.samples_ms[1]) / 2, 1)
    assert SpeedProbe().median_ms() is None
