"""Measure the cost of fanning out simulated venue calls through Ray.

Each simulated venue call waits 200 ms (``asyncio.sleep(0.2)``, standing in for network
latency). We launch 64 of them concurrently in three ways and time each:

(a) one plain ``@ray.remote`` task per call (default ``num_cpus=1``); all 64 are launched,
    then awaited with ``ray.get``. Ray only allows sync task functions, so the task body is
    ``asyncio.run(asyncio.sleep(0.2))``.
(b) the same task with ``num_cpus=0.05`` (fractional). Besides wall time, we count the Ray
    worker processes (``ray::*`` / ``default_worker.py`` in ``ps``, excluding the per-node
    ``ray::DashboardAgent`` / ``ray::RuntimeEnvAgent``) and sum their RSS right after the run
    and again after a few idle seconds (Ray reaps surplus idle workers).
(c) one async actor (``@ray.remote(num_cpus=0)``, ``async def call`` that sleeps 0.2 s);
    64 calls launched, then awaited with ``asyncio.gather`` from an async driver function.
    We also time 1,000 sequential awaited calls of a trivial async method (calls/s).

Ray runs locally with ``ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)``
and is shut down at the end. Nothing is written anywhere; results go to stdout as a table.

Run from the repository root:

    .venv/bin/python scripts/measure_gateway_calls.py
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass

import ray

N_CALLS = 64
LATENCY_S = 0.2
N_TRIVIAL = 1_000
IDLE_WAIT_S = 5.0


def _simulated_venue_call() -> float:
    asyncio.run(asyncio.sleep(LATENCY_S))
    return LATENCY_S


plain_task = ray.remote(_simulated_venue_call)
fractional_task = ray.remote(num_cpus=0.05)(_simulated_venue_call)


@ray.remote(num_cpus=0)
class VenueActor:
    async def call(self) -> float:
        await asyncio.sleep(LATENCY_S)
        return LATENCY_S

    async def ping(self) -> int:
        return 1


@dataclass
class Workers:
    count: int
    rss_mib: float
    foreign: int  # Ray processes on this host that do not belong to our session


def ray_workers() -> Workers:
    """Count our session's Ray worker processes and sum their RSS.

    ``ray.init`` starts the raylet as a child of this driver; workers are the raylet's
    ``ray::*`` (or ``default_worker.py``) children, minus the per-node agents, which are not
    workers. Ray processes of any other session on the host are only counted as ``foreign``.
    """
    ps = shutil.which("ps") or "/bin/ps"
    out = subprocess.run(  # noqa: S603 - fixed argv, no user input
        [ps, "-eo", "pid=,ppid=,rss=,args="], capture_output=True, text=True, check=True
    ).stdout
    procs = []
    for line in out.splitlines():
        pid, ppid, rss, *args = line.split(maxsplit=3)
        procs.append((int(pid), int(ppid), int(rss), args[0] if args else ""))
    me = os.getpid()
    ours = {me} | {pid for pid, ppid, _, _ in procs if ppid == me}
    raylets = {pid for pid, ppid, _, a in procs if ppid == me and "raylet/raylet" in a}
    count, rss_kib, foreign = 0, 0, 0
    for pid, ppid, rss, args in procs:
        is_ray = args.startswith("ray::") or "site-packages/ray/" in args
        if ppid in raylets:
            ours.add(pid)
            is_worker = args.startswith("ray::") or "default_worker.py" in args
            if is_worker and not args.split()[0].endswith("Agent"):
                count += 1
                rss_kib += rss
        elif is_ray and pid not in ours:
            foreign += 1
    return Workers(count, rss_kib / 1024, foreign)


def timed_tasks(remote_fn) -> float:
    start = time.perf_counter()
    refs = [remote_fn.remote() for _ in range(N_CALLS)]
    ray.get(refs)
    return time.perf_counter() - start


async def timed_actor(actor) -> tuple[float, float]:
    await actor.ping.remote()  # make sure the actor is up before timing
    start = time.perf_counter()
    await asyncio.gather(*(actor.call.remote() for _ in range(N_CALLS)))
    wall = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(N_TRIVIAL):
        await actor.ping.remote()
    rate = N_TRIVIAL / (time.perf_counter() - start)
    return wall, rate


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: list[tuple[str, str]] = []
    try:
        ray.get([plain_task.remote() for _ in range(2)])  # warm-up
        w0 = ray_workers()
        rows.append(("workers before (a) [count / RSS MiB]", f"{w0.count} / {w0.rss_mib:.0f}"))

        wall_a = timed_tasks(plain_task)
        rows.append((f"(a) {N_CALLS} tasks num_cpus=1: wall s", f"{wall_a:.3f}"))

        w1 = ray_workers()
        rows.append(("workers before (b) [count / RSS MiB]", f"{w1.count} / {w1.rss_mib:.0f}"))
        wall_b = timed_tasks(fractional_task)
        w2 = ray_workers()
        time.sleep(IDLE_WAIT_S)
        w3 = ray_workers()
        rows.append((f"(b) {N_CALLS} tasks num_cpus=0.05: wall s", f"{wall_b:.3f}"))
        rows.append(("(b) workers right after [count / RSS MiB]", f"{w2.count} / {w2.rss_mib:.0f}"))
        rows.append(
            (
                f"(b) workers after {IDLE_WAIT_S:.0f}s idle [count / RSS MiB]",
                f"{w3.count} / {w3.rss_mib:.0f}",
            )
        )

        actor = VenueActor.remote()
        wall_c, rate_c = asyncio.run(timed_actor(actor))
        rows.append((f"(c) async actor, {N_CALLS} calls gathered: wall s", f"{wall_c:.3f}"))
        rows.append((f"(c) trivial async method, {N_TRIVIAL} sequential: calls/s", f"{rate_c:.0f}"))
        w4 = ray_workers()
        rows.append(
            ("workers with actor alive [count / RSS MiB]", f"{w4.count} / {w4.rss_mib:.0f}")
        )
        foreign = max(w.foreign for w in (w0, w1, w2, w3, w4))
        rows.append(("other Ray processes on host (max seen)", str(foreign)))
        rows.append(("load avg 1m at end", f"{os.getloadavg()[0]:.2f}"))
        ray.kill(actor)
    finally:
        ray.shutdown()

    ideal = LATENCY_S
    print(
        f"Python {platform.python_version()}  Ray {ray.__version__}  "
        f"calls={N_CALLS} latency={LATENCY_S}s ideal wall~{ideal:.1f}s"
    )
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 10}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
