"""Raydium through its Trade API: Raydium routes and builds, dexec verifies and signs.

`quote` asks `GET {trade}/compute/swap-base-in`; `build_swap` sends the whole quote envelope
back to `POST {trade}/transaction/swap-base-in` with the order's minimum out as
`otherAmountThreshold`, the priority fee from `GET {api}/main/auto-fee` (capped), and
`wrapSol`/`unwrapSol`. The answer is a transaction built by someone else, so before the
wallet signs it is decoded (address lookup tables read over RPC) and checked by
`gateways.solana.verify`; then the order memo is added and it is compiled again under the
engine's own blockhash, whose `lastValidBlockHeight` the exactly-once rule needs. Sending,
statuses and the funds check are every Solana venue's (`SolanaVenue`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from core.errors import (
    DexecError,
    InvalidInput,
    RateLimited,
    UnsafeTransaction,
    VenueRefused,
    VenueTimeout,
    VenueUnavailable,
)
from core.quotes import Quote, SignedSwap
from gateways.base import VenueMetrics, signing_wallet
from gateways.raydium.models import (
    SwapCompute,
    parse_auto_fee,
    parse_compute,
    parse_transactions,
)
from gateways.solana.rpc import SolanaRpc
from gateways.solana.venue import NETWORK_FEE_LAMPORTS, QUOTE_TTL_S, SolanaVenue, memo_instruction
from gateways.solana.verify import (
    MAX_COMPUTE_UNITS,
    RAYDIUM_PROGRAMS,
    Expected,
    instructions,
    lookup_table,
    recompile,
    verify,
)

NAME = "raydium"
AUTO_FEE_TTL_S = 10.0
QUOTE_SLIPPAGE_BPS = 50  # what the compute call is asked; the build gets the order's minimum


def _translate(exc: Exception, what: str) -> DexecError:
    if isinstance(exc, DexecError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return VenueTimeout(f"raydium {what}: timed out", venue=NAME)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status == 429:
            return RateLimited(f"raydium {what}: rate limited", venue=NAME)
        return VenueUnavailable(f"raydium {what}: HTTP {status}", venue=NAME)
    return VenueUnavailable(f"raydium {what}: {exc}"[:300], venue=NAME)


class RaydiumTradeVenue(SolanaVenue):
    """The Raydium gateway on a live network (and on the local cluster's Trade API)."""

    def __init__(self, rpc: SolanaRpc, wallet: Keypair | None, *, trade_url: str,
                 api_url: str, tx_version: str = "V0", priority_level: str = "h",
                 priority_cap_micro_lamports: int = 0, timeout_s: float = 2.0,
                 rate_limit_per_s: float = 0.0, metrics: VenueMetrics | None = None,
                 http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(NAME, rpc, wallet, rate_limit_per_s=rate_limit_per_s, metrics=metrics)
        self._trade = trade_url.rstrip("/")
        self._api = api_url.rstrip("/")
        self._version = tx_version
        self._level = priority_level
        self._cap = priority_cap_micro_lamports
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock
        self._fee: tuple[int, float] | None = None

    async def _call(self, what: str, method: str, url: str, **kwargs: Any) -> Any:
        try:
            answer = await self._http.request(method, url, **kwargs)
            answer.raise_for_status()
            return answer.json()
        except Exception as exc:
            raise _translate(exc, what) from None

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        async with self._calls.call("quote"):
            await self._limit.acquire()
            started = time.perf_counter()
            body = await self._call("quote", "GET", f"{self._trade}/compute/swap-base-in",
                                    params={"inputMint": input_mint, "outputMint": output_mint,
                                            "amount": str(amount_in),
                                            "slippageBps": str(QUOTE_SLIPPAGE_BPS),
                                            "txVersion": self._version})
            try:
                compute = parse_compute(body)
            except ValueError as exc:
                raise VenueUnavailable(f"raydium quote: {exc}", venue=NAME) from None
            if (compute.input_mint, compute.output_mint, compute.input_amount) != (
                    input_mint, output_mint, amount_in):
                raise VenueUnavailable("raydium quote: the answer is for another swap",
                                       venue=NAME)
            if len(compute.route_plan) != 1:  # the verifier refuses what it cannot bound
                raise VenueRefused(f"raydium: only a {len(compute.route_plan)}-hop route,"
                                   " which dexec does not sign", venue=NAME)
            step = compute.route_plan[0]
            fee = sum(s.fee_amount for s in compute.route_plan if s.fee_mint == input_mint)
            return Quote(
                venue=NAME, pool=step.pool_id, input_mint=input_mint, output_mint=output_mint,
                amount_in=amount_in, amount_out=compute.output_amount, fee=fee,
                fee_bps=Decimal(sum(s.fee_rate for s in compute.route_plan)),
                price_impact_bps=int(compute.price_impact_pct * 100),
                network_fee_lamports=NETWORK_FEE_LAMPORTS,
                expires_at=time.time() + QUOTE_TTL_S, payload=json.dumps(compute.envelope),
                latency_ms=round((time.perf_counter() - started) * 1000, 3))

    async def _priority_price(self) -> int:
        """The auto-fee level's price, capped; 0 when no cap is set (no priority fee)."""
        if self._cap <= 0:
            return 0
        now = self._clock()
        if self._fee is None or now - self._fee[1] > AUTO_FEE_TTL_S:
            try:
                levels = parse_auto_fee(await self._call(
                    "auto-fee", "GET", f"{self._api}/main/auto-fee"))
                self._fee = (levels.get(self._level, levels["h"]), now)
            except (DexecError, ValueError):
                return self._fee[0] if self._fee else 0  # no fee data: the last, or none
        return min(self._fee[0], self._cap)

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        async with self._calls.call("build"):
            wallet = signing_wallet(self.name, self._wallet, quote)
            me = wallet.pubkey()
            envelope = self._envelope(quote, min_amount_out)
            price = await self._priority_price()
            await self._limit.acquire()
            body = await self._call("build", "POST", f"{self._trade}/transaction/swap-base-in",
                                    json={"wallet": str(me), "swapResponse": envelope,
                                          "txVersion": self._version,
                                          "computeUnitPriceMicroLamports": str(price),
                                          "wrapSol": True, "unwrapSol": True})
            try:
                raws = parse_transactions(body)
                if len(raws) != 1:
                    raise UnsafeTransaction(f"raydium answered {len(raws)} transactions; dexec"
                                            " signs a swap only as one transaction")
                tx = VersionedTransaction.from_bytes(raws[0])
            except ValueError as exc:
                raise VenueUnavailable(f"raydium build: {exc}", venue=NAME) from None
            tables = []
            message = tx.message
            if isinstance(message, MessageV0) and message.address_table_lookups:
                keys = [lookup.account_key for lookup in message.address_table_lookups]
                found = await self._rpc.accounts([str(k) for k in keys])
                for key, data in zip(keys, found, strict=True):
                    if data is None:
                        raise UnsafeTransaction(f"lookup table {key} does not exist")
                    tables.append(lookup_table(key, data))
            payer, ixs = instructions(tx, tables)
            verify(payer, ixs, Expected(
                wallet=me, input_mint=Pubkey.from_string(quote.input_mint),
                output_mint=Pubkey.from_string(quote.output_mint), amount_in=quote.amount_in,
                min_amount_out=min_amount_out, venue_programs=RAYDIUM_PROGRAMS,
                max_priority_fee_lamports=-(-self._cap * MAX_COMPUTE_UNITS // 1_000_000)),
                message.header.num_required_signatures)
            blockhash, last_valid = await self._rpc.latest_blockhash()
            signed = VersionedTransaction(
                recompile(me, [memo_instruction(memo, me), *ixs], Hash.from_string(blockhash),
                          v0=isinstance(message, MessageV0), tables=tables), [wallet])
            return SignedSwap(NAME, str(signed.signatures[0]), bytes(signed), last_valid,
                              min_amount_out)

    @staticmethod
    def _envelope(quote: Quote, min_amount_out: int) -> dict[str, Any]:
        """The quote's envelope, asking for the order's minimum out."""
        try:
            envelope = json.loads(quote.payload)
            compute: SwapCompute = parse_compute(envelope)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"raydium quote payload: {exc}", venue=NAME) from None
        if min_amount_out > compute.output_amount:
            raise InvalidInput("the minimum out is above the quoted output", venue=NAME)
        data = dict(envelope["data"])
        data["otherAmountThreshold"] = str(min_amount_out)
        data["slippageBps"] = int((compute.output_amount - min_amount_out) * 10_000
                                  // max(compute.output_amount, 1))
        return {**envelope, "data": data}

    async def close(self) -> None:
        await self._http.aclose()
