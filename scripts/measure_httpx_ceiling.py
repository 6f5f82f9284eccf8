"""Measure how many requests a second the bench's httpx client can send on its own.

The client is the one `dexec bench --client httpx` uses: AsyncClients of HTTPX_SHARD (10)
connections each, `concurrency` requests in flight, on uvloop. The server is trivial, in a
process of its own at nice 15 (like Ray's workers): it answers every POST at once with an
order-sized JSON body.
So the figure is the client's ceiling on this machine, with no engine involved. Run it on an
otherwise idle machine:

    .venv/bin/python scripts/measure_httpx_ceiling.py [concurrency] [client niceness]

On 2026-12-01's thirteenth-session machine: 1,037 requests/s with 1,024 in flight and
1,170/s with 256, the client at 99-100% of a core (nice 0). Three times the engine's capacity
there was 2,600/s: more than httpx can send from one process, whatever the server.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time

from dexec.bench import HTTPX_SHARD

PORT = 18777
SERVER = r'''
import asyncio, os, sys
os.nice(15)
BODY = b'{"order_id":"x","status":"pending","pad":"' + b"p" * 1100 + b'"}'
ANSWER = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: "
          + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            size = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    size = int(line.split(b":")[1])
            if size:
                await reader.readexactly(size)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


async def drive(url: str, concurrency: int, per_client: int, seconds: float
                ) -> tuple[float, float]:
    """Send POSTs for `seconds`; return (requests per second, the client's cores)."""
    import httpx

    clients = [httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=per_client))
               for _ in range(math.ceil(concurrency / per_client))]
    body = {"type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "1.5"}
    done = 0
    end = time.monotonic() + seconds

    async def sender(k: int) -> None:
        nonlocal done
        client = clients[k % len(clients)]
        while time.monotonic() < end:
            answer = await client.post(url, json=body)
            answer.json()
            done += 1

    cpu, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(sender(k) for k in range(concurrency)))
    elapsed = time.monotonic() - start
    cores = (time.process_time() - cpu) / elapsed
    for client in clients:
        await client.aclose()
    return done / elapsed, cores


def main() -> None:
    concurrency = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    niceness = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(PORT)])  # noqa: S603 - fixed argv
    try:
        time.sleep(1.0)
        os.nice(niceness)
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        rate, cores = asyncio.run(drive(f"http://127.0.0.1:{PORT}/api/orders", concurrency,
                                        HTTPX_SHARD, 10.0))
    finally:
        server.terminate()
        server.wait()
    print(f"httpx, clients of {HTTPX_SHARD}, {concurrency} in flight, client at nice {niceness}:"
          f" {rate:.0f} requests/s, the client at {cores * 100:.0f}% of a core")


if __name__ == "__main__":
    main()
