"""Meteora DLMM pairs from Meteora's pool API: the gateway's directory of where to trade."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from solders.pubkey import Pubkey

from core.errors import DexecError, RateLimited, VenueTimeout, VenueUnavailable
from gateways.meteora.models import MeteoraPair, parse_pair, parse_pairs
from gateways.solana.venue import Pool

REFRESH_S = 300.0  # pairs come and go slowly; a failed refresh keeps the last list


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


class MeteoraPairs:
    """The pairs to trade, from `GET {api}/pair/all` or, when addresses are configured, from
    `GET {api}/pair/{address}` for each: refreshed every `REFRESH_S`."""

    def __init__(self, api_url: str, addresses: Sequence[str] = (), *,
                 http: httpx.AsyncClient | None = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api_url.rstrip("/")
        self._addresses = list(addresses)
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock
        self._pools: list[Pool] | None = None
        self._fetched = float("-inf")

    async def _get(self, path: str) -> Any:
        answer = await self._http.get(f"{self._api}{path}")
        answer.raise_for_status()
        return answer.json()

    async def pools(self) -> list[Pool]:
        if self._pools is not None and self._clock() - self._fetched < REFRESH_S:
            return self._pools
        try:
            if self._addresses:
                pairs = [parse_pair(await self._get(f"/pair/{a}")) for a in self._addresses]
            else:
                pairs = parse_pairs(await self._get("/pair/all"))
            self._pools = best_pairs(pairs)
            self._fetched = self._clock()
        except (httpx.HTTPError, ValueError) as exc:
            if self._pools is None:
                raise _translate(exc) from None
            self._fetched = self._clock() - REFRESH_S + 10.0  # try again in 10 s
        return self._pools

    async def close(self) -> None:
        await self._http.aclose()
