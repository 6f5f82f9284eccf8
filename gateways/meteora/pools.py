"""Meteora DLMM pairs from Meteora's pool API: the gateway's directory of where to trade."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from solders.pubkey import Pubkey

from core.errors import DexecError, RateLimited, VenueTimeout, VenueUnavailable
from gateways.meteora.models import MeteoraPair, parse_pair, parse_pairs
from gateways.solana.venue import Pool

log = logging.getLogger(__name__)

REFRESH_S = 300.0  # pairs come and go slowly; a failed refresh keeps the last list
RETRY_S = 10.0  # after a failed refresh


def best_pairs(pairs: Sequence[MeteoraPair]) -> list[Pool]:
    """One pair per mint pair: the most liquid one that is neither hidden nor blacklisted."""
    best: dict[frozenset[str], MeteoraPair] = {}
    for pair in pairs:
        key = frozenset((pair.mint_x, pair.mint_y))
        if pair.hidden or len(key) != 2:
            continue
        if key not in best or pair.liquidity > best[key].liquidity:
            best[key] = pair
    return [Pool(Pubkey.from_string(p.address), Pubkey.from_string(p.mint_x),
                 Pubkey.from_string(p.mint_y)) for p in best.values()]


def _translate(exc: Exception) -> DexecError:
    if isinstance(exc, httpx.TimeoutException):
        return VenueTimeout("meteora pool API timed out", venue="meteora")
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 429:
        return RateLimited("meteora pool API: rate limited", venue="meteora")
    return VenueUnavailable(f"meteora pool API: {exc}"[:300], venue="meteora")


def _read_outcome(task: asyncio.Task[list[Pool]]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("meteora pool API: %s", exc)


class MeteoraPairs:
    """The pairs to trade, from `GET {api}/pair/all` or, when addresses are configured, from
    `GET {api}/pair/{address}` for each.

    The list is fetched by a task of its own, under its own timeout (`/pair/all` is large on
    mainnet), never under a quote's: a quote that finds no list yet waits for the fetch at
    most its own deadline (it is shielded, so it goes on for the next quote), and a list
    older than `REFRESH_S` is used while a fresh one is fetched. A failed refresh keeps the
    last list; a configured pair the API does not know (404) is left out, with a warning.
    """

    def __init__(self, api_url: str, addresses: Sequence[str] = (), *,
                 http: httpx.AsyncClient | None = None, timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api_url.rstrip("/")
        self._addresses = list(addresses)
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock
        self._pools: list[Pool] | None = None
        self._fetched = float("-inf")
        self._fetch: asyncio.Task[list[Pool]] | None = None

    async def _get(self, path: str) -> Any:
        answer = await self._http.get(f"{self._api}{path}")
        answer.raise_for_status()
        return answer.json()

    async def _load(self) -> list[Pool]:
        if not self._addresses:
            return best_pairs(parse_pairs(await self._get("/pair/all")))
        pairs = []
        for address in self._addresses:
            try:
                pairs.append(parse_pair(await self._get(f"/pair/{address}")))
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                log.warning("DEXEC_METEORA_PAIRS names %s, which Meteora's API does not know",
                            address)
        return best_pairs(pairs)

    async def _refresh(self) -> list[Pool]:
        try:
            pools = await self._load()
        except (httpx.HTTPError, ValueError) as exc:
            if self._pools is None:
                raise _translate(exc) from None
            log.warning("meteora pool API: %s; keeping the last %d pairs", exc,
                        len(self._pools))
            self._fetched = self._clock() - REFRESH_S + RETRY_S  # try again soon
            return self._pools
        self._pools, self._fetched = pools, self._clock()
        return pools

    def _start_fetch(self) -> asyncio.Task[list[Pool]]:
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.get_running_loop().create_task(self._refresh())
            # Its outcome is read even when no quote waits for it any more (a shielded
            # wait that timed out, a background refresh): never "exception not retrieved".
            self._fetch.add_done_callback(_read_outcome)
        return self._fetch

    async def pools(self) -> list[Pool]:
        if self._pools is not None:
            if self._clock() - self._fetched >= REFRESH_S:
                self._start_fetch()  # stale: answer the last list while a new one comes
            return self._pools
        return await asyncio.shield(self._start_fetch())

    async def close(self) -> None:
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
        await self._http.aclose()
