"""`python -m gateways.localnet [--port 8899] [--data-dir DIR] [--profile zero|realistic]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from gateways.localnet.cluster import PROFILES, Localnet, serve
from gateways.localnet.server import Faults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dexec localnet", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--data-dir", type=Path, default=Path(".dexec/localnet"))
    parser.add_argument("--profile", choices=sorted(PROFILES), default="realistic")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift-bps", type=float, default=5.0)
    parser.add_argument("--faults", default="",
                        help="faults to inject, e.g. drop_send_rate=0.05,http_429_rate=0.02"
                             " (also timeout_rate, hang_s, malformed_rate, http_503_rate,"
                             " delay_ms)")
    parser.add_argument("--test-hooks", action="store_true",
                        help="allow POST /localnet/faults (fault injection for tests)")
    args = parser.parse_args(argv)
    try:
        faults = Faults.parse(args.faults, Faults(delay_ms=PROFILES[args.profile].delay_ms))
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    localnet = Localnet(args.data_dir, profile=args.profile, seed=args.seed,
                        drift_bps=args.drift_bps, faults=faults, test_hooks=args.test_hooks)
    asyncio.run(serve(localnet, args.host, args.port))


if __name__ == "__main__":
    main()
