"""The venues' HTTP APIs for the local cluster, in the shapes the live ones answer.

- Raydium's Trade API (`/raydium/trade/compute/swap-base-in`,
  `/raydium/trade/transaction/swap-base-in`) and its pool API's priority fee
  (`/raydium/api/main/auto-fee`): quotes priced from the local CPMM pools' accounts with the
  program's math, and unsigned CPMM swap transactions (legacy or V0) built against them with
  the local cluster's latest blockhash, as the live API builds them for mainnet pools.
- Meteora's DLMM pool API (`/meteora/pair/all`, `/meteora/pair/{address}`): the local DLMM
  pairs with their reserves and fees.

They run inside the cluster process (they read its ledger), each with its own faults (HTTP
429/503, delays, timeouts) and, in test mode, a `tamper` switch that makes the Trade API
answer a transaction the engine must refuse to sign (one that sends the input elsewhere,
calls an unknown program, or lowers the minimum out).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from solders.address_lookup_table_account import (
    AddressLookupTable,
    AddressLookupTableAccount,
)
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction, VersionedTransaction
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateways.localnet.ledger import Ledger
from gateways.localnet.server import Faults
from gateways.solana import cpmm, dlmm
from gateways.solana.programs import CpmmProgram
from gateways.solana.venue import swap_instructions

AUTO_FEE = {"vh": 120_000, "h": 50_000, "m": 10_000}  # micro-lamports per compute unit
TAMPERS = ("", "drain", "program", "min_out")
STRANGER = Pubkey.create_with_seed(Pubkey.default(), "dexec-stranger", Pubkey.default())


@dataclass(frozen=True)
class VenueFaults(Faults):
    """What one local venue API does wrong on purpose: the RPC server's faults that apply to
    an HTTP API (429/503 rates, timeouts answered `hang_s` late, delays; not dropped sends
    or malformed answers), and `tamper`."""

    tamper: str = ""  # test mode: the Trade API builds a transaction that must be refused

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tamper not in TAMPERS:
            raise ValueError(f"tamper must be one of {TAMPERS}")


def _fail(msg: str) -> JSONResponse:
    return JSONResponse({"id": str(uuid.uuid4()), "success": False, "version": "V1",
                         "msg": msg})


class LocalVenueApis:
    """Raydium's Trade API and Meteora's pool API over one ledger's pools."""

    def __init__(self, ledger: Callable[[], Ledger], pools: Callable[[], list[Any]], *,
                 delay_ms: int = 0, rng: random.Random | None = None) -> None:
        self._ledger = ledger  # the cluster's current ledger (replaced on journal replay)
        self._pools = pools
        self.faults = {"raydium": VenueFaults(delay_ms=delay_ms),
                       "meteora": VenueFaults(delay_ms=delay_ms)}
        self._rng = rng or random.Random()  # noqa: S311 (fault injection, not secrets)
        self._program = CpmmProgram()

    def routes(self) -> list[Route]:
        return [
            Route("/raydium/trade/compute/swap-base-in", self._compute, methods=["GET"]),
            Route("/raydium/trade/transaction/swap-base-in", self._transaction,
                  methods=["POST"]),
            Route("/raydium/api/main/auto-fee", self._auto_fee, methods=["GET"]),
            Route("/meteora/pair/all", self._pairs, methods=["GET"]),
            Route("/meteora/pair/{address}", self._pair, methods=["GET"]),
        ]

    def set_faults(self, venue: str, changes: dict[str, Any]) -> VenueFaults:
        if venue not in self.faults:
            raise ValueError(f"no local venue API {venue!r}")
        self.faults[venue] = replace(self.faults[venue], **changes)
        return self.faults[venue]

    async def _faulty(self, venue: str) -> Response | None:
        """The fault this request meets, if any (a timeout only delays it)."""
        f = self.faults[venue]
        if f.delay_ms:
            await asyncio.sleep(f.delay_ms / 1000)
        if f.timeout_rate and self._rng.random() < f.timeout_rate:
            await asyncio.sleep(f.hang_s)
        if f.http_429_rate and self._rng.random() < f.http_429_rate:
            return JSONResponse({"error": "too many requests"}, status_code=429,
                                headers={"Retry-After": "1"})
        if f.http_503_rate and self._rng.random() < f.http_503_rate:
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        return None

    # -- Raydium ---------------------------------------------------------------------------

    def _listed(self, mint_a: str, mint_b: str) -> Any:
        for listed in self._pools():
            if listed.venue == "raydium" and {listed.mint_x, listed.mint_y} == {mint_a, mint_b}:
                return listed
        return None

    def _cpmm_pool(self, mint_a: str, mint_b: str) -> Pubkey | None:
        listed = self._listed(mint_a, mint_b)
        return Pubkey.from_string(listed.address) if listed is not None else None

    def _tables(self, mint_a: str, mint_b: str) -> list[AddressLookupTableAccount]:
        listed = self._listed(mint_a, mint_b)
        if listed is None or not listed.lookup_table:
            return []
        key = Pubkey.from_string(listed.lookup_table)
        found = self._ledger().account(key)
        if found is None:
            return []
        return [AddressLookupTableAccount(
            key, list(AddressLookupTable.deserialize(bytes(found.data)).addresses))]

    def _price(self, pool: Pubkey, input_mint: Pubkey, output_mint: Pubkey, amount: int) -> Any:
        ledger = self._ledger()
        state = ledger.pool_state(pool)
        keys = [pool, state.token_0_vault, state.token_1_vault, state.amm_config]
        data = []
        for key in keys:
            found = ledger.account(key)
            data.append(bytes(found.data) if found is not None else None)
        return self._program.quote(pool, (keys, data), input_mint, output_mint, amount)

    async def _compute(self, request: Request) -> Response:
        if (fault := await self._faulty("raydium")) is not None:
            return fault
        q = request.query_params
        try:
            input_mint, output_mint = q["inputMint"], q["outputMint"]
            amount, slippage = int(q["amount"]), int(q.get("slippageBps", "50"))
            mint_in = Pubkey.from_string(input_mint)
            mint_out = Pubkey.from_string(output_mint)
            if amount <= 0 or not 0 <= slippage <= 10_000:
                raise ValueError
        except (KeyError, ValueError):
            return _fail("REQ_PARAMS_ERROR")
        pool = self._cpmm_pool(input_mint, output_mint)
        if pool is None or input_mint == output_mint:
            return _fail("ROUTE_NOT_FOUND")
        try:
            priced = self._price(pool, mint_in, mint_out, amount)
        except Exception:  # an empty pool, an amount it cannot fill
            return _fail("INSUFFICIENT_LIQUIDITY")
        threshold = priced.amount_out * (10_000 - slippage) // 10_000
        return JSONResponse({
            "id": str(uuid.uuid4()), "success": True, "version": "V1",
            "data": {
                "swapType": "BaseIn", "inputMint": input_mint, "inputAmount": str(amount),
                "outputMint": output_mint, "outputAmount": str(priced.amount_out),
                "otherAmountThreshold": str(threshold), "slippageBps": slippage,
                "priceImpactPct": float(Decimal(priced.price_impact_bps) / 100),
                "referrerAmount": "0",
                "routePlan": [{
                    "poolId": str(pool), "inputMint": input_mint, "outputMint": output_mint,
                    "feeMint": input_mint, "feeRate": int(priced.fee_bps),
                    "feeAmount": str(priced.fee), "remainingAccounts": [],
                    "lastPoolPriceX64": "0"}],
            },
        })

    async def _transaction(self, request: Request) -> Response:
        if (fault := await self._faulty("raydium")) is not None:
            return fault
        try:
            body = json.loads(await request.body())
            wallet = Pubkey.from_string(str(body["wallet"]))
            envelope = body["swapResponse"]
            data = envelope["data"]
            step = data["routePlan"][0]
            pool = Pubkey.from_string(str(step["poolId"]))
            mint_in = Pubkey.from_string(str(data["inputMint"]))
            mint_out = Pubkey.from_string(str(data["outputMint"]))
            amount_in = int(data["inputAmount"])
            minimum = int(data["otherAmountThreshold"])
            price = int(body.get("computeUnitPriceMicroLamports") or 0)
            version = str(body.get("txVersion", "V0"))
            wrap, unwrap = bool(body.get("wrapSol", False)), bool(body.get("unwrapSol", False))
            if envelope.get("success") is not True or version not in ("V0", "LEGACY"):
                raise ValueError
        except (ValueError, KeyError, TypeError, IndexError):
            return _fail("REQ_SWAP_RESPONSE_ERROR")
        if self._cpmm_pool(str(mint_in), str(mint_out)) != pool:
            return _fail("REQ_SWAP_RESPONSE_ERROR")
        ledger = self._ledger()
        state = ledger.pool_state(pool)
        tamper = self.faults["raydium"].tamper
        if tamper == "min_out":
            minimum = 0
        accounts = cpmm.SwapAccounts.for_pool(pool, state, wallet, mint_in)
        swap = cpmm.swap_base_input(accounts, amount_in, minimum)
        ixs = swap_instructions(wallet, mint_in, mint_out, amount_in, swap,
                                wrap_sol=wrap, unwrap_sol=unwrap)
        if price > 0:
            ixs = [set_compute_unit_limit(300_000), set_compute_unit_price(price), *ixs]
        if tamper == "drain":  # the input leaves the wallet for someone else's account
            source = get_associated_token_address(wallet, mint_in)
            ixs.append(Instruction(TOKEN_PROGRAM, bytes([3]) + amount_in.to_bytes(8, "little"),
                                   [AccountMeta(source, False, True),
                                    AccountMeta(get_associated_token_address(STRANGER, mint_in),
                                                False, True),
                                    AccountMeta(wallet, True, False)]))
        elif tamper == "program":
            ixs.append(Instruction(STRANGER, b"\x01", [AccountMeta(wallet, True, True)]))
        blockhash = Hash.from_string(ledger.latest_blockhash()[0])
        if version == "V0":
            message = MessageV0.try_compile(wallet, ixs, self._tables(str(mint_in),
                                                                      str(mint_out)), blockhash)
            raw = bytes(VersionedTransaction.populate(message, [Signature.default()]))
        else:
            raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash(ixs, wallet,
                                                                            blockhash)))
        return JSONResponse({"id": str(uuid.uuid4()), "success": True, "version": "V1",
                             "data": [{"transaction": base64.b64encode(raw).decode()}]})

    async def _auto_fee(self, _: Request) -> Response:
        if (fault := await self._faulty("raydium")) is not None:
            return fault
        return JSONResponse({"id": str(uuid.uuid4()), "success": True,
                             "data": {"default": AUTO_FEE}})

    # -- Meteora ---------------------------------------------------------------------------

    def _pair_json(self, address: str) -> dict[str, Any]:
        ledger = self._ledger()
        pair, _ = ledger.dlmm_state(Pubkey.from_string(address))
        rx = ledger.token_amount(pair.reserve_x) or 0
        ry = ledger.token_amount(pair.reserve_y) or 0
        dx, dy = ledger.decimals[pair.token_x_mint], ledger.decimals[pair.token_y_mint]
        price = Decimal(dlmm.price_of(pair.active_id, pair.bin_step)) / dlmm.Q64 * \
            Decimal(10) ** (dx - dy)
        base_fee = Decimal(pair.fee_rate(0)) / 10**7  # 1e9 precision, in percent
        return {
            "address": address, "name": f"{pair.token_x_mint}-{pair.token_y_mint}",
            "mint_x": str(pair.token_x_mint), "mint_y": str(pair.token_y_mint),
            "reserve_x": str(pair.reserve_x), "reserve_y": str(pair.reserve_y),
            "reserve_x_amount": rx, "reserve_y_amount": ry, "bin_step": pair.bin_step,
            "base_fee_percentage": str(base_fee), "max_fee_percentage": "10",
            "protocol_fee_percentage": "5", "liquidity": str(
                Decimal(rx).scaleb(-dx) * price + Decimal(ry).scaleb(-dy)),
            "current_price": float(price), "hide": False, "is_blacklisted": False,
        }

    async def _pairs(self, _: Request) -> Response:
        if (fault := await self._faulty("meteora")) is not None:
            return fault
        return JSONResponse([self._pair_json(p.address) for p in self._pools()
                             if p.venue == "meteora"])

    async def _pair(self, request: Request) -> Response:
        if (fault := await self._faulty("meteora")) is not None:
            return fault
        address = request.path_params["address"]
        if not any(p.venue == "meteora" and p.address == address for p in self._pools()):
            return JSONResponse({"error": "pair not found"}, status_code=404)
        return JSONResponse(self._pair_json(address))
