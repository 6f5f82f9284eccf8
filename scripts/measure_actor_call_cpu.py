"""Measure the CPU one Ray actor call costs, in the caller and in the callee.

Two bare async actors on a local Ray (num_cpus=2): the caller awaits the callee `rate` times
a second for 8 s, carrying `batch` integers each time, and both processes' CPU time is read
from /proc before and after. Run it on an otherwise idle machine:

    .venv/bin/python scripts/measure_actor_call_cpu.py

On the 2-core machine of the issue-4 measurements (2026-11-25), four runs gave 1.0-2.0 ms in
the caller plus 1.1-1.9 ms in the callee per call: 2-4 ms in all, varying from run to run,
whether the call carried one item or a hundred, and with no consistent difference between
task events on and off. An order that crosses a dozen such calls costs some 25-45 ms of CPU
when it travels alone; see the README's Performance section.
"""

from __future__ import annotations

import asyncio
import os
import time

import ray

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


@ray.remote(num_cpus=0)
class Callee:
    def pid(self) -> int:
        return os.getpid()

    async def plain(self, items: list[int]) -> list[int]:
        return items

    @ray.method(enable_task_events=False)
    async def quiet(self, items: list[int]) -> list[int]:
        return items


@ray.remote(num_cpus=0)
class Caller:
    def pid(self) -> int:
        return os.getpid()

    async def run(self, callee: ray.actor.ActorHandle, method: str, rate: float, seconds: float,
                  batch: int) -> int:
        call = getattr(callee, method)
        started, calls = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            await call.remote(list(range(batch)))
            calls += 1
            await asyncio.sleep(1 / rate)
        return calls


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        callee = Callee.remote()  # type: ignore[attr-defined]
        caller = Caller.remote()  # type: ignore[attr-defined]
        callee_pid, caller_pid = ray.get([callee.pid.remote(), caller.pid.remote()])
        for method in ("quiet", "plain"):
            for rate, batch in ((100, 1), (200, 1), (200, 100)):
                before = cpu_seconds(callee_pid), cpu_seconds(caller_pid)
                calls = ray.get(caller.run.remote(callee, method, rate, 8.0, batch))
                callee_ms = 1000 * (cpu_seconds(callee_pid) - before[0]) / calls
                caller_ms = 1000 * (cpu_seconds(caller_pid) - before[1]) / calls
                events = "on" if method == "plain" else "off"
                print(f"task events {events:3}  {rate}/s  {batch:3} items: {calls} calls,"
                      f" caller {caller_ms:.2f} ms + callee {callee_ms:.2f} ms of CPU per call",
                      flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
