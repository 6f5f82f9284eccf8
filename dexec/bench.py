"""`dexec bench`: drive the real engine the way clients do, and report what it did.

Submissions go over HTTP (or the WebSocket submit path with --ws) to a stack the benchmark
starts itself, or to a running one (--url). Outcomes are read back from PostgreSQL, so
"lost" (accepted, never terminal) and "duplicate" (more than one executed swap for one
order) are checked against the record, not inferred from responses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from core.orders import TERMINAL
from core.settings import LOOPBACK
from storage.reports import count_terminal, outcomes

PAIRS = [("SOL", "USDC", "0.01"), ("USDC", "USDT", "2"), ("SOL", "USDT", "0.01"),
         ("RAY", "USDC", "1"), ("RAY", "SOL", "1")]
STAGES = [("queue_wait", "pending"), ("routing", "routing"), ("building", "building"),
          ("submitted_to_confirmed", "submitted")]


HTTPX_SHARD = 10  # connections per httpx client (see _submit_httpx)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders", type=int, default=5000, help="orders to submit (cap)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="target submissions per second (0: as fast as --concurrency allows)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds to keep submitting (0: until --orders are submitted)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--latency", choices=("zero", "realistic"), default="zero",
                        help="simulated venue latency of a stack the benchmark starts")
    parser.add_argument("--ws", action="store_true", help="submit over the WebSocket")
    parser.add_argument("--client", choices=("aiohttp", "httpx", "raw"), default="aiohttp",
                        help="the HTTP client that submits (httpx: clients of"
                             " --httpx-connections each; raw: HTTP/1.1 written on asyncio"
                             " streams, the cheapest load this process can make; see the"
                             " README)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the load client's event loop (uvloop: less of the machine's CPU"
                             " per request, which on a shared machine the engine keeps)")
    parser.add_argument("--httpx-connections", type=int, default=HTTPX_SHARD,
                        help="connections of each httpx client (--client httpx)")
    parser.add_argument("--sweep", help="offered rates to run one after the other on one"
                        " stack, e.g. 100,200,400,800 (each for --duration, default 15 s);"
                        " --plot then draws goodput against offered load")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --sweep: run the whole sweep this many times, the rates"
                        " interleaved, and report each rate's median, lowest and highest"
                        " goodput (one run of a rate varies by tens of percent here)")
    parser.add_argument("--url", help="benchmark a running stack instead of starting one")
    parser.add_argument("--database-url", help="with --url: where to read outcomes from")
    parser.add_argument("--api-key", help="with --url: a trade key (default: DEXEC_API_KEY,"
                        " else the dev key in .dexec/api-key)")
    parser.add_argument("--network", choices=("sim", "localnet"), default="sim",
                        help="the chain of a started stack: the in-process simulated chain"
                             " (the engine's own cost) or the local Solana cluster")
    parser.add_argument("--rpc-url", help="with --url on a Solana network: where to count"
                                          " the executed swaps")
    parser.add_argument("--workers", type=int, default=1,
                        help="workers of a started stack (default 1, like DEXEC_WORKERS)")
    parser.add_argument("--worker-concurrency", type=int, default=0,
                        help="orders each worker executes at once (started stack; 0: the"
                             " setting DEXEC_WORKER_CONCURRENCY, 5000 by default)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait for accepted orders to finish")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the load client at this niceness (15: the same as Ray's"
                             " workers, so the client does not outrank the engine it measures"
                             " on a shared machine; use it for overload sweeps there, see the"
                             " README); the stack it starts keeps its own")
    parser.add_argument("--limit-orders", type=int, default=0, metavar="N",
                        help="rest N limit orders, move the price across them once, and time"
                        " the price watcher (a stack started here; see dexec/bench_limits.py)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the data folder of a stack started here (its embedded"
                        " PostgreSQL, hundreds of MB) instead of removing it at the end")
    parser.add_argument("--out", default="bench-result.json", help="where to write the JSON")
    parser.add_argument("--plot", help="draw latency percentiles and throughput to this PNG")


@dataclass
class Tally:
    accepted: int = 0
    rejected_429: int = 0
    rejected_503: int = 0  # refused by the front after waiting (HAProxy's queue timeout)
    client_cpu: float = 0.0  # the load client's CPU while submitting, in cores
    stack_cpu_s: float = 0.0  # the stack's CPU from the first submission to the drain's end
    stack_wall_s: float = 0.0  # ... and that window's length
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    submitted_at: dict[str, float] = field(default_factory=dict)  # order id -> unix time
    first_submit: float = 0.0
    last_submit: float = 0.0


class MemorySampler:
    """Peak memory of the whole stack: every Ray process and PostgreSQL.

    Two sums: RSS, which counts a shared page once per process mapping it (Ray's object
    store and PostgreSQL's shared buffers are mapped by many), and PSS, which splits each
    shared page between the processes sharing it, so the sum is the memory really in use.
    RSS is read every second; PSS costs the kernel a walk of every mapping (a tenth of a
    core here, taken from the stack under test), so it is read every `pss_every_s` and once
    more at the end.
    """

    def __init__(self, pss_every_s: float = 5.0) -> None:
        self.peak_bytes = 0
        self.last_bytes = 0
        self.peak_pss_bytes = 0
        self.last_pss_bytes = 0
        self._pss_every = pss_every_s

    @staticmethod
    def _stack() -> list[psutil.Process]:
        procs = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                name = proc.info["name"] or ""
            except (psutil.Error, TypeError):
                continue
            if proc.pid == os.getpid():  # the load client itself (its path may say "ray")
                continue
            if ("ray" in cmd or "ray::" in name or "postgres" in name
                    or "raylet" in name or "gcs_server" in name):
                procs.append(proc)
        return procs

    @classmethod
    def stack_memory(cls, *, pss: bool = True) -> tuple[int, int]:
        """Return (summed RSS, summed PSS) of the stack; PSS is 0 unless asked for."""
        rss = total_pss = 0
        for proc in cls._stack():
            try:
                if pss:
                    info = proc.memory_full_info()
                    rss += info.rss
                    total_pss += getattr(info, "pss", info.rss)
                else:
                    rss += proc.memory_info().rss
            except (psutil.Error, AttributeError):
                continue
        return rss, total_pss

    def _record(self, rss: int, pss: int | None) -> None:
        self.last_bytes = rss
        self.peak_bytes = max(self.peak_bytes, rss)
        if pss is not None:
            self.last_pss_bytes = pss
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)

    @classmethod
    def stack_cpu(cls) -> dict[tuple[int, float], float]:
        """CPU seconds so far of each process of the stack, by (pid, start time)."""
        used = {}
        for proc in cls._stack():
            try:
                times = proc.cpu_times()
                used[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:
                continue
        return used

    @staticmethod
    def cpu_between(before: dict[tuple[int, float], float],
                    after: dict[tuple[int, float], float], since: float) -> float:
        """CPU seconds the stack used between two `stack_cpu` snapshots, the first taken at
        `since`. A process started after it counts in full; one the first snapshot missed
        although it ran already counts nothing (its lifetime is not this window's), and one
        that exited in between is lost (an old HAProxy after a reload, say)."""
        return sum(used - before[key] if key in before else used
                   for key, used in after.items()
                   if key in before or key[1] >= since)

    async def sample(self, *, pss: bool) -> None:
        rss, total_pss = await asyncio.to_thread(self.stack_memory, pss=pss)
        self._record(rss, total_pss if pss else None)

    async def run(self, stop: asyncio.Event) -> None:
        next_pss = 0.0
        while not stop.is_set():
            with_pss = time.monotonic() >= next_pss
            if with_pss:
                next_pss = time.monotonic() + self._pss_every
            await self.sample(pss=with_pss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await self.sample(pss=True)  # the stack at the end


class SpeedProbe:
    """How fast this machine runs a fixed piece of Python right now: once a second, the CPU
    time (of its own thread) of the same 200,000-step loop, in ms. The machines here change
    speed by up to 1.8 times within seconds (a neighbour on the host, or the other vCPU being
    busy); on 2026-12-01 a run's median read 7.6-8.1 ms in a fast phase and 12.8 ms in a slow
    one. A run's median tells its figures' phase, so runs compare only within one (see the
    README, issue 15's twelfth session). It costs about 1% of one core, counted in the load
    client's CPU."""

    STEPS = 200_000

    def __init__(self, interval_s: float = 1.0) -> None:
        self.samples_ms: list[float] = []
        self._interval = interval_s

    @classmethod
    def measure(cls) -> float:
        begin = time.thread_time()
        total = 0
        for step in range(cls.STEPS):
            total += step
        return 1000 * (time.thread_time() - begin)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples_ms.append(await asyncio.to_thread(self.measure))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    def median_ms(self) -> float | None:
        return round(statistics.median(self.samples_ms), 1) if self.samples_ms else None


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "max": round(ordered[-1] * 1000, 1)}


async def submit_load(args: argparse.Namespace, url: str, run_id: str, tally: Tally,
                      progress: Any) -> None:
    import aiohttp

    deadline = time.time() + args.duration if args.duration else math.inf
    counter = iter(range(10**9))
    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.time()
    tally.first_submit = start

    def begin() -> None:
        """The client is ready: the schedule and the deadline start now. An httpx client
        takes about 40 ms to make here (it loads the CA bundle), and 26 of them took the
        first second of the schedule, which then counted against the engine (p99 1.1 s at
        100/s, all of it in the run's first second)."""
        nonlocal start, deadline
        start = tally.first_submit = time.time()
        deadline = start + args.duration if args.duration else math.inf

    def next_body() -> dict[str, Any] | None:
        i = next(counter)
        if i >= args.orders or time.time() >= deadline:
            return None
        a, b, amount = PAIRS[i % len(PAIRS)]
        return {"type": "market", "input_mint": a, "output_mint": b, "amount": amount,
                "slippage_bps": 100, "client_order_id": f"bench-{run_id}-{i}"}

    def record(status: int, body: dict[str, Any], at: float) -> None:
        if status in (200, 202):
            tally.accepted += 1
            tally.submitted_at[body["order_id"]] = at
        elif status == 429:
            tally.rejected_429 += 1
        elif status == 503 and isinstance(body, dict) and "error" in body:
            tally.rejected_503 += 1
        else:
            tally.errors += 1
            if len(tally.error_samples) < 5:
                tally.error_samples.append(f"{status}: {str(body)[:200]}")
        tally.last_submit = time.time()
        progress()

    async def paced(i: int) -> float:
        """Wait for order i's turn on the schedule; return when it was due. Latency counts
        from then, not from when the request left: a client held back at its in-flight cap
        would otherwise hide the wait (coordinated omission)."""
        if not interval:
            return time.time()
        due = start + i * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return due

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    auth = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.client == "httpx" and not args.ws:
        await _submit_httpx(args, url, auth, next_body, record, paced, begin)
        return
    if args.client == "raw" and not args.ws:
        await _submit_raw(args, url, auth, next_body, record, paced)
        return
    async with aiohttp.ClientSession(connector=connector, headers=auth) as session:
        if args.ws:
            async def ws_client(worker: int) -> None:
                async with session.ws_connect(url.replace("http", "ws", 1) + "/ws") as ws:
                    n = worker
                    while (body := next_body()) is not None:
                        at = await paced(n)
                        n += args.concurrency
                        await ws.send_str(json.dumps({"op": "submit", "order": body}))
                        while True:
                            message = await ws.receive()
                            if message.type != aiohttp.WSMsgType.TEXT:
                                # Closed by the server (past DEXEC_WS_MAX_CONNECTIONS_PER_
                                # ACCOUNT, or idle): this order went unanswered; the other
                                # connections take the rest.
                                record(0, {"error": f"websocket closed: {message.extra}"}, at)
                                return
                            frame = json.loads(message.data)
                            if frame["type"] == "accepted":
                                record(202, frame["order"], at)
                                unsubscribe = {"op": "unsubscribe",
                                               "order_ids": [frame["order"]["order_id"]]}
                                await ws.send_str(json.dumps(unsubscribe))
                                break
                            if frame["type"] == "error":
                                record(frame.get("status", 400), frame, at)
                                break

            await asyncio.gather(*(ws_client(w) for w in range(args.concurrency)))
            return

        async def post(_: int, body: dict[str, Any]) -> tuple[int, Any]:
            try:
                async with session.post(f"{url}/api/orders", json=body) as response:
                    return response.status, await response.json()
            except (aiohttp.ClientError, ValueError) as exc:
                return 0, {"error": repr(exc)}

        await _submit_http(args, post, next_body, record, paced)


Post = Callable[[int, dict[str, Any]], Awaitable[tuple[int, Any]]]


async def _submit_http(args: argparse.Namespace, post: Post, next_body: Any, record: Any,
                       paced: Any) -> None:
    """`--concurrency` submitters, each taking the next order on the schedule and posting
    it with `post(worker, body)` (status 0 when the request itself failed)."""
    async def submitter(worker: int) -> None:
        n = worker
        while (body := next_body()) is not None:
            at = await paced(n)
            n += args.concurrency
            status, answer = await post(worker, body)
            record(status, answer, at)

    await asyncio.gather(*(submitter(w) for w in range(args.concurrency)))


async def _submit_httpx(args: argparse.Namespace, url: str, auth: dict[str, str],
                        next_body: Any, record: Any, paced: Any,
                        begin: Callable[[], None]) -> None:
    """The same load through httpx: clients of --httpx-connections each. One AsyncClient
    with many connections spends its CPU in its own pool (httpcore assigns requests to
    connections by scanning all of both, on every request and response), and that CPU is
    taken from the engine under test, whose Ray workers run at nice 15."""
    import httpx

    per_client = max(1, args.httpx_connections)
    clients = [httpx.AsyncClient(headers=auth, timeout=60.0,
                                 limits=httpx.Limits(max_connections=per_client))
               for _ in range(math.ceil(args.concurrency / per_client))]
    begin()  # the clients exist: their making is not the engine's time

    async def post(worker: int, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            response = await clients[worker % len(clients)].post(f"{url}/api/orders",
                                                                  json=body)
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return 0, {"error": repr(exc)}

    try:
        await _submit_http(args, post, next_body, record, paced)
    finally:
        for client in clients:
            await client.aclose()


async def _submit_raw(args: argparse.Namespace, url: str, auth: dict[str, str],
                      next_body: Any, record: Any, paced: Any) -> None:
    """The same load as HTTP/1.1 written by hand on asyncio streams, one keep-alive
    connection per submitter: no client library between the schedule and the socket.

    On a shared machine the load client's CPU is taken from the engine it measures, and
    past capacity most of that CPU goes on submissions the front refuses. This client
    spends a fraction of aiohttp's per request, so a sweep with it shows what the engine
    does under a flood with less of the flood's own cost (see the README, issue 15)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join([
        f"POST {parts.path.rstrip('/')}/api/orders HTTP/1.1\r\nHost: {parts.netloc}\r\n",
        *(f"{name}: {value}\r\n" for name, value in auth.items()),
        "Content-Type: application/json\r\nContent-Length: ",
    ]).encode()
    connections: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def post(worker: int, body: dict[str, Any]) -> tuple[int, Any]:
        payload = json.dumps(body).encode()
        try:
            if worker not in connections:
                connections[worker] = await asyncio.open_connection(host, port)
            reader, writer = connections[worker]
            writer.write(b"%s%d\r\n\r\n%s" % (head, len(payload), payload))
            status, answer, keep_alive = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            status, answer, keep_alive = 0, {"error": repr(exc)}, False
        if not keep_alive and worker in connections:
            connections.pop(worker)[1].close()
        return status, answer

    try:
        await _submit_http(args, post, next_body, record, paced)
    finally:
        for _, writer in connections.values():
            writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, Any, bool]:
    """One HTTP/1.1 response: (status, the JSON body or {} when empty, whether the
    connection stays open). Bodies come with a Content-Length or chunked."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
            pass
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    keep_alive = headers.get("connection", "").lower() != "close"
    return status, json.loads(body) if body else {}, keep_alive


def summarize(args: argparse.Namespace, tally: Tally, found: dict[str, dict[str, Any]],
              memory: MemorySampler, machine: dict[str, Any]) -> dict[str, Any]:
    total: list[float] = []
    overhead: list[float] = []
    stages: dict[str, list[float]] = {name: [] for name in ["submit", *(n for n, _ in STAGES)]}
    confirmed = failed = lost = duplicates = 0
    finish_times: list[float] = []
    timeline: list[tuple[float, float]] = []  # (confirmed at, latency)
    for order_id, submitted in tally.submitted_at.items():
        order = found.get(order_id)
        if order is None or order["status"] not in TERMINAL:
            lost += 1
            continue
        duplicates += order["executed"] > 1
        events = order["events"]
        first_at: dict[str, float] = {}
        for e in events:
            first_at.setdefault(e["s"], float(e["at"]))
        last_at = {e["s"]: float(e["at"]) for e in events}
        end = float(events[-1]["at"])
        finish_times.append(end)
        if order["status"] == "failed":
            failed += 1
            continue
        confirmed += 1
        total.append(end - submitted)
        if order.get("venue_s") is not None:
            # What the engine added: everything but the venues' own quote and swap time.
            overhead.append(max(0.0, end - submitted - order["venue_s"]))
        timeline.append((end, end - submitted))
        if "pending" in first_at:  # the front: the request sent until the order was stored
            stages["submit"].append(max(0.0, first_at["pending"] - submitted))
        order_of = [s for _, s in STAGES] + ["confirmed"]
        for (name, status), nxt in zip(STAGES, order_of[1:], strict=True):
            if status in last_at and nxt in first_at:
                stages[name].append(max(0.0, first_at[nxt] - last_at[status]))
    # Orders in flight at once: accepted (the 202 arrived) and not yet terminal.
    changes = sorted([(at, 1) for at in tally.submitted_at.values()]
                     + [(t, -1) for t in finish_times])
    in_flight = peak_in_flight = 0
    for _, step in changes:
        in_flight += step
        peak_in_flight = max(peak_in_flight, in_flight)
    window = max(tally.last_submit - tally.first_submit, 1e-9)
    done_window = max((max(finish_times) if finish_times else 0) - tally.first_submit, 1e-9)
    return {
        "machine": machine,
        "settings": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "accepted": tally.accepted,
        "confirmed": confirmed,
        "failed": failed,
        "rejected_429": tally.rejected_429,
        "rejected_503": tally.rejected_503,
        "client_cpu_cores": round(tally.client_cpu, 3),
        # None: not measured (a stack on another machine) or nothing confirmed.
        "stack_cpu_cores": round(tally.stack_cpu_s / tally.stack_wall_s, 3)
        if tally.stack_wall_s else None,
        "stack_cpu_ms_per_order": round(1000 * tally.stack_cpu_s / confirmed, 2)
        if confirmed and tally.stack_wall_s else None,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "lost": lost,
        "peak_in_flight": peak_in_flight,
        "duplicate_executions": duplicates,
        "throughput": {"accepted_per_s": round(tally.accepted / window, 1),
                       "terminal_per_s": round((confirmed + failed) / done_window, 1),
                       "submit_window_s": round(window, 2)},
        "latency_ms": {"submit_to_confirmed": percentiles(total),
                       "engine_overhead": percentiles(overhead),
                       **{name: percentiles(v) for name, v in stages.items()}},
        "peak_memory_mb": round(memory.peak_bytes / 2**20),
        "end_memory_mb": round(memory.last_bytes / 2**20),
        "peak_pss_mb": round(memory.peak_pss_bytes / 2**20),
        "end_pss_mb": round(memory.last_pss_bytes / 2**20),
        "timeline": timeline,
    }


def plot(result: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return
    points = sorted(result["timeline"])
    if not points:
        return
    t0 = points[0][0]
    buckets: dict[int, list[float]] = {}
    for at, latency in points:
        buckets.setdefault(int(at - t0), []).append(latency * 1000)
    seconds = sorted(buckets)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for q, style in ((0.5, "-"), (0.9, "--"), (0.99, ":")):
        ax1.plot(seconds, [sorted(buckets[s])[min(len(buckets[s]) - 1,
                                                  int(q * len(buckets[s])))] for s in seconds],
                 style, label=f"p{int(q * 100)}")
    ax1.set_ylabel("submit → confirmed (ms)")
    ax1.legend()
    ax2.bar(seconds, [len(buckets[s]) for s in seconds])
    ax2.set_ylabel("confirmed per second")
    ax2.set_xlabel("seconds")
    fig.suptitle(f"dexec bench: {result['accepted']} accepted, "
                 f"{result['throughput']['terminal_per_s']}/s terminal")
    fig.savefig(path, dpi=100)


def client_nice() -> int:
    """The load client's niceness. On a shared machine a client at 0 outranks Ray's workers
    (nice 15) and preempts the engine it measures: at three times capacity here, aiohttp at
    nice 0 kept 81% of capacity and the stack's CPU per order rose 10%; at nice 15, 91% with
    that cost flat (README, thirteenth session)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def print_report(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    print("\n=== dexec bench ===")
    print(f"accepted {result['accepted']}  confirmed {result['confirmed']}  failed "
          f"{result['failed']}  rejected(429) {result['rejected_429']}"
          f"  refused(503) {result['rejected_503']}  errors {result['errors']}")
    print(f"lost {result['lost']}  duplicate executions {result['duplicate_executions']}"
          f"  peak in flight {result['peak_in_flight']}"
          f"  load client CPU {100 * result['client_cpu_cores']:.0f}% of a core"
          f" (at nice {result['machine'].get('client_nice', '-')})")
    print(f"the stack's CPU (first submission to the drain's end): "
          f"{result['stack_cpu_cores'] or '-'} cores, {result['stack_cpu_ms_per_order'] or '-'}"
          f" ms per confirmed order; the machine's speed probe:"
          f" {result['machine'].get('speed_probe_ms') or '-'} ms (lower is faster)")
    tp = result["throughput"]
    print(f"throughput: accepted {tp['accepted_per_s']}/s  terminal {tp['terminal_per_s']}/s"
          f"  (submitting for {tp['submit_window_s']} s)")
    print(f"{'latency ms':<26}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, values in lat.items():
        print(f"{name:<26}" + "".join(f"{values[k] if values[k] is not None else '-':>9}"
                                      for k in ("p50", "p90", "p99", "max")))
    print(f"memory of the stack (PSS, shared pages counted once): peak"
          f" {result['peak_pss_mb']} MB, at the end {result['end_pss_mb']} MB")
    print(f"summed RSS (shared pages counted in every process): peak"
          f" {result['peak_memory_mb']} MB, at the end {result['end_memory_mb']} MB")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; return a process exit code (1 if anything was lost or duplicated)."""
    for noisy in ("httpx", "httpx2"):  # one line per RPC call when counting on the chain
        logging.getLogger(noisy).setLevel(logging.WARNING)
    engine = None
    stack: subprocess.Popen[bytes] | None = None  # the stack's own process (bench_stack.py)
    data_dir: Path | None = None  # a stack started here keeps its data there
    database_url = args.database_url
    url = args.url
    if url is not None and not args.api_key:
        from actors.bootstrap import client_key
        from core.settings import Settings

        args.api_key = client_key(Settings().data_dir)
    if args.limit_orders and url is not None:
        print("--limit-orders moves the simulated chain's price: it needs a stack started"
              " here (no --url)", file=sys.stderr)
        return 2
    if url is None:
        import tempfile

        from dexec.bench_stack import start_stack

        data_dir = Path(tempfile.mkdtemp(prefix="dexec-bench-"))
        spec: dict[str, Any] = dict(
            data_dir=str(data_dir), port=18_500,
            namespace=f"dexec-bench-{uuid.uuid4().hex[:6]}",
            workers=args.workers, max_open_orders=0, account_orders_per_minute=0,
            sim_drift_interval_s=1.0, network=args.network,
            localnet_port=19_899,
            # --limit-orders: every order of the run rests at once, and the chain's price
            # is moved through its test hook.
            account_open_orders=0, test_hooks=bool(args.limit_orders),
        )
        if args.worker_concurrency:
            spec["worker_concurrency"] = args.worker_concurrency
        print(f"starting a {args.latency}-latency stack in {data_dir} ...", file=sys.stderr)
        if args.limit_orders:
            # Its price is moved through the chain's actor: this process joins the stack.
            engine, ready = start_stack(spec, zero=args.latency == "zero")
        else:
            # Anything else drives the stack from outside, as its clients do (bench_stack.py).
            try:
                stack, ready = _stack_process(spec, zero=args.latency == "zero")
            except BaseException:
                if not args.keep_data:
                    shutil.rmtree(data_dir, ignore_errors=True)
                raise
        url = ready["url"]
        args.api_key = ready["api_key"]
        database_url = ready["database_url"]
        if args.network != "sim":
            args.rpc_url = ready["rpc_url"]
    if database_url is None:
        print("--url needs --database-url to check outcomes", file=sys.stderr)
        return 2
    run_id = uuid.uuid4().hex[:8]
    if args.rate and args.duration:
        # The schedule's own length: each submitter takes its next order as soon as the last
        # one is answered, so a deadline alone let up to --concurrency more in past it.
        args.orders = min(args.orders, int(args.rate * args.duration))
    if args.nice:
        os.nice(args.nice)  # after the stack started: its processes keep their niceness
    try:
        if args.sweep:
            return _sweep(args, url, database_url)
        if args.limit_orders:
            return _limit_orders(args, url, database_url, run_id, engine)
        result = _run_client(args, _drive(args, url, database_url, run_id))
    finally:
        if engine is not None:
            from dexec.launch import stop_engine

            stop_engine(engine)
        if stack is not None:
            _stop_stack_process(stack)
        if data_dir is not None:
            if args.keep_data:
                print(f"the stack's data is kept in {data_dir}", file=sys.stderr)
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
    Path(args.out).write_text(json.dumps({k: v for k, v in result.items() if k != "timeline"},
                                         indent=2))
    print_report(result)
    print(f"written to {args.out}")
    if args.plot:
        plot(result, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if result["lost"] or result["duplicate_executions"] else 0


def _stack_process(spec: dict[str, Any], *, zero: bool,
                   timeout_s: float = 300.0) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the stack in a process of its own; return it and what bench_stack.py wrote."""
    from dexec.bench_stack import READY_FILE

    ready_file = Path(spec["data_dir"]) / READY_FILE
    command = [sys.executable, "-m", "dexec.bench_stack", json.dumps(spec)]
    proc = subprocess.Popen(command + (["zero"] if zero else []))  # noqa: S603 - our own module
    deadline = time.monotonic() + timeout_s
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_stack_process(proc)
            raise RuntimeError(f"the benchmark's stack did not start (exit {proc.returncode})")
        time.sleep(0.2)
    ready: dict[str, Any] = json.loads(ready_file.read_text())
    return proc, ready


def _stop_stack_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _limit_orders(args: argparse.Namespace, url: str, database_url: str, run_id: str,
                  engine: Any) -> int:
    import ray

    from actors.shell import CHAIN, MANAGER
    from dexec.bench_limits import run_limit_orders

    ns = engine.settings.namespace
    result = asyncio.run(run_limit_orders(
        args.limit_orders, url, args.api_key, database_url,
        ray.get_actor(CHAIN, namespace=ns), ray.get_actor(MANAGER, namespace=ns), run_id,
        concurrency=args.concurrency, drain_timeout_s=args.drain_timeout))
    Path(args.out).write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        print(f"{key:>38}: {value}")
    print(f"written to {args.out}")
    return 1 if result["lost"] or result["duplicate_executions"] else 0


def sweep_row(offered: float, result: dict[str, Any]) -> dict[str, Any]:
    """One offered rate's line: what was accepted, refused, and done in time."""
    lat = result["latency_ms"]["submit_to_confirmed"]
    return {"offered_per_s": offered, "accepted": result["accepted"],
            "rejected_429": result["rejected_429"], "rejected_503": result["rejected_503"],
            "errors": result["errors"],
            # confirmed per second, from the first submission to the last order finished
            "goodput_per_s": round(result["throughput"]["terminal_per_s"] * result["confirmed"]
                                   / max(result["confirmed"] + result["failed"], 1), 1),
            "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "submit_p99_ms": result["latency_ms"]["submit"]["p99"],
            "client_cpu_pct": round(100 * result["client_cpu_cores"]),
            "stack_ms_per_order": result["stack_cpu_ms_per_order"],
            "probe_ms": result["machine"].get("speed_probe_ms"), "lost": result["lost"],
            "duplicates": result["duplicate_executions"]}


def sweep_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each offered rate's runs in one line: median, lowest and highest goodput, median
    latencies, and the median goodput as a share of the best rate's median (issue 15's test:
    at least 90% at any rate up to three times capacity). Losses and duplicates are summed:
    one is one too many."""
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        by_rate.setdefault(r["offered_per_s"], []).append(r)

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 1) if known else None

    summary = []
    for offered, runs in by_rate.items():
        goodputs = [r["goodput_per_s"] for r in runs]
        summary.append({
            "offered_per_s": offered, "runs": len(runs),
            "goodput_median_per_s": median(goodputs), "goodput_min_per_s": min(goodputs),
            "goodput_max_per_s": max(goodputs),
            "p50_median_ms": median([r["p50_ms"] for r in runs]),
            "p99_median_ms": median([r["p99_ms"] for r in runs]),
            "submit_p99_median_ms": median([r["submit_p99_ms"] for r in runs]),
            "stack_ms_per_order_median": median([r["stack_ms_per_order"] for r in runs]),
            "probe_ms_median": median([r["probe_ms"] for r in runs]),
            "refused": sum(r["rejected_429"] + r["rejected_503"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "lost": sum(r["lost"] for r in runs),
            "duplicates": sum(r["duplicates"] for r in runs)})
    best = max((s["goodput_median_per_s"] or 0.0 for s in summary), default=0.0)
    for line in summary:
        line["of_best_pct"] = round(100 * (line["goodput_median_per_s"] or 0.0) / best) \
            if best else None
    return summary


def _sweep(args: argparse.Namespace, url: str, database_url: str) -> int:
    """Run each offered rate of --sweep in turn on one stack (the whole sweep --repeat
    times); print and plot the table."""
    rates = [float(r) for r in str(args.sweep).split(",") if r.strip()]
    duration = args.duration or 15.0
    repeat = max(1, args.repeat)
    rows = []
    for round_ in range(1, repeat + 1):
        for rate in rates:
            one = argparse.Namespace(**{**vars(args), "rate": rate, "duration": duration,
                                        "orders": int(rate * duration)})
            print(f"--- offered {rate:g}/s for {duration:g} s ({args.client}), run {round_} of"
                  f" {repeat} ---", file=sys.stderr)
            result = _run_client(one, _drive(one, url, database_url, uuid.uuid4().hex[:8]))
            rows.append({**sweep_row(rate, result), "run": round_})
    summary = sweep_summary(rows)
    nice = client_nice()
    Path(args.out).write_text(json.dumps(
        {"client": args.client, "loop": args.loop, "client_nice": nice,
         "repeat": repeat, "sweep": rows, "summary": summary}, indent=2))
    print(f"\n=== dexec bench --sweep ({args.client}, {args.loop}, the client at nice"
          f" {nice}) ===")
    print(f"{'offered/s':>10}{'run':>5}{'accepted':>10}{'429':>7}{'503':>6}{'goodput/s':>11}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'submit p99':>12}{'client cpu':>12}"
          f"{'stack ms/order':>16}{'probe ms':>10}{'lost':>6}{'dup':>5}")
    for r in rows:
        print(f"{r['offered_per_s']:>10g}{r['run']:>5}{r['accepted']:>10}{r['rejected_429']:>7}"
              f"{r['rejected_503']:>6}{r['goodput_per_s']:>11}{r['p50_ms'] or '-':>9}"
              f"{r['p99_ms'] or '-':>9}{r['submit_p99_ms'] or '-':>12}"
              f"{str(r['client_cpu_pct']) + '%':>12}{r['stack_ms_per_order'] or '-':>16}"
              f"{r['probe_ms'] or '-':>10}{r['lost']:>6}{r['duplicates']:>5}")
    if repeat > 1:
        print(f"\n{'offered/s':>10}{'runs':>6}{'goodput/s median':>18}{'(lowest-highest)':>18}"
              f"{'of best':>9}{'p50 ms':>9}{'p99 ms':>9}{'submit p99':>12}"
              f"{'stack ms/order':>16}{'probe ms':>10}")
        for line in summary:
            spread = f"{line['goodput_min_per_s']}-{line['goodput_max_per_s']}"
            print(f"{line['offered_per_s']:>10g}{line['runs']:>6}"
                  f"{line['goodput_median_per_s']:>18}{spread:>18}"
                  f"{str(line['of_best_pct']) + '%':>9}{line['p50_median_ms'] or '-':>9}"
                  f"{line['p99_median_ms'] or '-':>9}{line['submit_p99_median_ms'] or '-':>12}"
                  f"{line['stack_ms_per_order_median'] or '-':>16}"
                  f"{line['probe_ms_median'] or '-':>10}")
    print(f"written to {args.out}")
    if args.plot:
        plot_sweep(rows, args.client, args.plot, summary if repeat > 1 else None)
        print(f"plot written to {args.plot}")
    return 1 if any(r["lost"] or r["duplicates"] for r in rows) else 0


def plot_sweep(rows: list[dict[str, Any]], client: str, path: str,
               summary: list[dict[str, Any]] | None = None) -> None:
    """Goodput and latency against offered load; with repeated runs, each rate's median with
    its lowest and highest goodput as the error bar."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    if summary is None:
        offered = [r["offered_per_s"] for r in rows]
        ax1.plot(offered, [r["goodput_per_s"] for r in rows], "o-", label="goodput")
        p50s, p99s = [r["p50_ms"] or 0 for r in rows], [r["p99_ms"] or 0 for r in rows]
    else:
        offered = [s["offered_per_s"] for s in summary]
        medians = [s["goodput_median_per_s"] or 0 for s in summary]
        ax1.errorbar(offered, medians, fmt="o-", capsize=4, label="goodput (median, range)",
                     yerr=[[m - s["goodput_min_per_s"] for m, s in zip(medians, summary,
                                                                      strict=True)],
                           [s["goodput_max_per_s"] - m for m, s in zip(medians, summary,
                                                                      strict=True)]])
        p50s = [s["p50_median_ms"] or 0 for s in summary]
        p99s = [s["p99_median_ms"] or 0 for s in summary]
    ax1.plot(offered, offered, ":", label="offered")
    ax1.set_ylabel("orders per second")
    ax1.legend()
    ax2.plot(offered, p50s, "o-", label="p50")
    ax2.plot(offered, p99s, "s--", label="p99")
    ax2.set_ylabel("submit → confirmed (ms)")
    ax2.set_xlabel("offered orders per second")
    ax2.legend()
    fig.suptitle(f"dexec bench --sweep ({client})")
    fig.savefig(path, dpi=100)


async def count_on_chain(rpc_url: str, database_url: str, prefix: str,
                         found: dict[str, dict[str, Any]]) -> None:
    from gateways.solana.rpc import SolanaRpc
    from storage.reports import swap_signatures

    signatures = await swap_signatures(database_url, prefix)
    rpc = SolanaRpc(rpc_url, timeout_s=30.0)
    try:
        for order_id, order in found.items():
            mine = signatures.get(order_id, [])
            states = await rpc.statuses(mine, search_history=True) if mine else []
            order["executed"] = sum(1 for st in states if st is not None and st.err is None)
    finally:
        await rpc.close()


async def _drive(args: argparse.Namespace, url: str, database_url: str, run_id: str
                 ) -> dict[str, Any]:
    from actors.shell import tune_gc

    tune_gc()  # the client shares the cores with the stack under test: keep it cheap
    tally = Tally()
    memory = MemorySampler()
    stop = asyncio.Event()
    sampler = asyncio.get_running_loop().create_task(memory.run(stop))
    speed = SpeedProbe()
    prober = asyncio.get_running_loop().create_task(speed.run(stop))
    terminal = 0
    started = time.time()

    def progress() -> None:
        done = tally.accepted + tally.rejected_429 + tally.rejected_503 + tally.errors
        if done % 50 == 0:
            show(done)

    def show(done: int) -> None:
        goal = args.orders
        filled = int(30 * min(1.0, done / goal)) if goal else 0
        rate = tally.accepted / max(time.time() - started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] submitted {done}"
                         f"  accepted {tally.accepted} ({rate:.0f}/s)  429 {tally.rejected_429}"
                         f"  errors {tally.errors}  terminal {terminal}   ")
        sys.stderr.flush()

    # The stack's own CPU is read from this machine's processes: a stack elsewhere has none.
    local = urllib.parse.urlsplit(url).hostname in LOOPBACK
    try:
        stack_before = await asyncio.to_thread(memory.stack_cpu)
        cpu_before, wall_before = time.process_time(), time.time()
        await submit_load(args, url, run_id, tally, progress)
        # The load client's own CPU while it submitted (a share of one core): on a shared
        # machine that CPU is taken from the engine, whose Ray workers run at nice 15.
        tally.client_cpu = ((time.process_time() - cpu_before)
                            / max(time.time() - wall_before, 1e-9))
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline:
            terminal = await count_terminal(database_url, f"bench-{run_id}-")
            show(tally.accepted + tally.rejected_429 + tally.rejected_503 + tally.errors)
            if terminal >= tally.accepted:
                break
            await asyncio.sleep(1.0)
        # The stack's own CPU for what it served (HAProxy's refusals included), from the
        # first submission to the drain's end: CPU per order tells an engine that wastes
        # its CPU under a flood from one that has less of it, the load client's CPU being
        # taken from the same cores.
        if local:
            stack_after = await asyncio.to_thread(memory.stack_cpu)
            tally.stack_wall_s = time.time() - wall_before
            tally.stack_cpu_s = memory.cpu_between(stack_before, stack_after, wall_before)
        sys.stderr.write("\n")
    finally:
        stop.set()  # the sampler takes one more full sample
        await sampler
        await prober
    found = await outcomes(database_url, f"bench-{run_id}-")
    if args.rpc_url:  # a Solana cluster: count each order's executed swaps on the chain
        await count_on_chain(args.rpc_url, database_url, f"bench-{run_id}-", found)
    machine = {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total
                                                              / 2**30, 1),
               "python": sys.version.split()[0], "client_loop": getattr(args, "loop", "asyncio"),
               "client_nice": client_nice(), "speed_probe_ms": speed.median_ms()}
    return summarize(args, tally, found, memory, machine)


def _run_client(args: argparse.Namespace,
                load: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run the load client on the event loop --loop names. On a shared machine its CPU is
    taken from the engine it measures, and uvloop spends less of it per request (at 1,500
    requests/s offered here: aiohttp 42% of a core on uvloop against 47% on asyncio's loop;
    raw 22% against 26%)."""
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not on this platform (Windows): the standard loop
            print("uvloop is not installed here: running on asyncio's loop", file=sys.stderr)
            args.loop = "asyncio"  # what the run's report records
        else:
            return uvloop.run(load)
    return asyncio.run(load)
