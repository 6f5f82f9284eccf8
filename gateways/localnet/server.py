"""The local cluster's Solana JSON-RPC server: the methods the engine and solana-py use.

One process, one event loop, one Ledger: every request is answered whole before the next
(the ledger is synchronous and fast, ~0.1 ms a transaction), so no transaction ever sees
half of another. Faults (dropped sends, HTTP 429/503, delays, timeouts, malformed answers)
come from `Faults`, set at start (`--faults`, `DEXEC_LOCALNET_FAULTS`) or, in test mode,
through `POST /localnet/faults`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from solders.pubkey import Pubkey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateways.localnet.ledger import INVALID_PARAMS, Ledger, RpcError

METHOD_NOT_FOUND = -32601
PARSE_ERROR = -32700
MAX_BATCH = 100
MAX_STATUSES = 256
MAX_ACCOUNTS = 100


@dataclass(frozen=True)
class Faults:
    """What the server does wrong on purpose (rates are 0..1)."""

    drop_send_rate: float = 0.0  # accept a send, answer its signature, never execute it
    http_429_rate: float = 0.0
    http_503_rate: float = 0.0
    # The request is carried out (a send executes) but its answer comes `hang_s` late, past
    # any client's timeout: the outcome is unknown to the caller, as after a real timeout.
    timeout_rate: float = 0.0
    hang_s: float = 10.0
    # The request is carried out and answered with a truncated JSON body (a broken proxy).
    malformed_rate: float = 0.0
    delay_ms: int = 0  # added to every answer

    def __post_init__(self) -> None:
        for name in ("drop_send_rate", "http_429_rate", "http_503_rate", "timeout_rate",
                     "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.delay_ms < 0 or self.hang_s < 0:
            raise ValueError("delay_ms and hang_s must not be negative")

    @classmethod
    def parse(cls, spec: str, base: Faults | None = None) -> Faults:
        """`"drop_send_rate=0.05,http_429_rate=0.02"` over `base`; a bad spec is a ValueError."""
        known = {f.name: f.type for f in fields(cls)}
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"unknown fault {name!r}: one of {', '.join(known)}")
            changes[name] = int(value) if name == "delay_ms" else float(value)
        return replace(base or cls(), **changes)


class RpcServer:
    """Solana JSON-RPC over one Ledger."""

    def __init__(self, ledger: Ledger, *, faults: Faults | None = None, test_hooks: bool = False,
                 rng: random.Random | None = None) -> None:
        self.ledger = ledger
        self.faults = faults or Faults()
        self._test_hooks = test_hooks
        self._rng = rng or random.Random()  # noqa: S311 (fault injection, not secrets)
        # requestAirdrop: the cluster process routes it through its journal
        self.on_airdrop: Callable[[Pubkey, int], str] = lambda key, n: self.ledger.airdrop(key, n)
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "getHealth": lambda _: "ok",
            "getVersion": lambda _: {"solana-core": "2.2.0-dexec-localnet", "feature-set": 0},
            "getSlot": lambda _: self.ledger.slot(),
            "getBlockHeight": lambda _: self.ledger.block_height(),
            "getLatestBlockhash": self._latest_blockhash,
            "sendTransaction": self._send,
            "simulateTransaction": self._simulate,
            "getSignatureStatuses": self._statuses,
            "getTransaction": self._transaction,
            "getAccountInfo": self._account_info,
            "getMultipleAccounts": self._multiple_accounts,
            "getBalance": lambda p: self._context(self.ledger.balance(_pubkey(p, 0))),
            "getTokenAccountBalance": self._token_balance,
            "requestAirdrop": self._airdrop,
            "getMinimumBalanceForRentExemption": lambda p: (
                self.ledger.svm.minimum_balance_for_rent_exemption(int(_param(p, 0)))),
        }

    def app(self) -> Starlette:
        routes = [Route("/", self._http, methods=["POST"])]
        if self._test_hooks:
            routes.append(Route("/localnet/faults", self._set_faults, methods=["POST"]))
        return Starlette(routes=routes)

    # -- HTTP ----------------------------------------------------------------------------

    async def _http(self, request: Request) -> Response:
        f = self.faults
        if f.delay_ms:
            await asyncio.sleep(f.delay_ms / 1000)
        if f.http_429_rate and self._rng.random() < f.http_429_rate:
            return JSONResponse({"error": "too many requests"}, status_code=429,
                                headers={"Retry-After": "1"})
        if f.http_503_rate and self._rng.random() < f.http_503_rate:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(_error(None, RpcError(PARSE_ERROR, "Parse error")))
        if isinstance(body, list):
            if not body or len(body) > MAX_BATCH:
                return JSONResponse(_error(None, RpcError(-32600, "Invalid request")))
            answer: Any = [self.call(item) for item in body]
        else:
            answer = self.call(body)
        # Both faults below come after the work is done: the caller cannot know its outcome.
        if f.timeout_rate and self._rng.random() < f.timeout_rate:
            await asyncio.sleep(f.hang_s)
        if f.malformed_rate and self._rng.random() < f.malformed_rate:
            text = json.dumps(answer)
            return Response(text[: len(text) // 2], media_type="application/json")
        return JSONResponse(answer)

    async def _set_faults(self, request: Request) -> Response:
        """Test mode: change the faults; `adverse_bps` front-runs every swap by that much."""
        changes = json.loads(await request.body())
        if "adverse_bps" in changes:
            self.ledger.adverse_bps = int(changes.pop("adverse_bps"))
        try:
            self.faults = replace(self.faults, **changes)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({**asdict(self.faults), "adverse_bps": self.ledger.adverse_bps})

    def call(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, RpcError(-32600, "Invalid request"))
        rid = request.get("id")
        method = self._methods.get(request["method"])
        if method is None:
            return _error(rid, RpcError(METHOD_NOT_FOUND, "Method not found"))
        params = request.get("params") or []
        if not isinstance(params, list):
            return _error(rid, RpcError(INVALID_PARAMS, "params must be an array"))
        try:
            return {"jsonrpc": "2.0", "id": rid, "result": method(params)}
        except RpcError as exc:
            return _error(rid, exc)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return _error(rid, RpcError(INVALID_PARAMS, f"Invalid params: {exc}"))

    # -- methods -------------------------------------------------------------------------

    def _context(self, value: Any) -> dict[str, Any]:
        return {"context": {"slot": self.ledger.slot(), "apiVersion": "2.2.0"}, "value": value}

    def _latest_blockhash(self, _: list[Any]) -> dict[str, Any]:
        blockhash, last_valid = self.ledger.latest_blockhash()
        return self._context({"blockhash": blockhash, "lastValidBlockHeight": last_valid})

    def _send(self, params: list[Any]) -> str:
        config = _config(params)
        tx_bytes = _decode_tx(params, config)
        skip = bool(config.get("skipPreflight", False))
        if self.faults.drop_send_rate and self._rng.random() < self.faults.drop_send_rate:
            tx = self.ledger.parse(tx_bytes)  # still a valid transaction, still its signature
            return str(tx.signatures[0])
        return self.ledger.send(tx_bytes, skip_preflight=skip)

    def _simulate(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params)
        return self._context(self.ledger.simulate(_decode_tx(params, config)))

    def _statuses(self, params: list[Any]) -> dict[str, Any]:
        signatures = _param(params, 0)
        if not isinstance(signatures, list) or len(signatures) > MAX_STATUSES:
            raise RpcError(INVALID_PARAMS, f"Too many inputs provided; max {MAX_STATUSES}")
        return self._context(self.ledger.statuses([str(s) for s in signatures]))

    def _transaction(self, params: list[Any]) -> dict[str, Any] | None:
        found = self.ledger.executed.get(str(_param(params, 0)))
        if found is None or not found.tx_bytes:
            return None
        return {
            "slot": found.slot,
            "blockTime": found.block_time,
            "version": "legacy" if found.tx_bytes[1 + 64 * found.tx_bytes[0]] < 0x80 else 0,
            "transaction": [base64.b64encode(found.tx_bytes).decode(), "base64"],
            "meta": {
                "err": found.err,
                "status": {"Ok": None} if found.err is None else {"Err": found.err},
                "fee": found.fee,
                "preBalances": found.pre_balances,
                "postBalances": found.post_balances,
                "innerInstructions": [],
                "logMessages": found.logs,
                "preTokenBalances": found.pre_token_balances,
                "postTokenBalances": found.post_token_balances,
                "rewards": [],
                "loadedAddresses": {"writable": found.loaded[0], "readonly": found.loaded[1]},
                "computeUnitsConsumed": found.units,
            },
        }

    def _account_json(self, key: Pubkey) -> dict[str, Any] | None:
        found = self.ledger.account(key)
        if found is None:
            return None
        return {"data": [base64.b64encode(bytes(found.data)).decode(), "base64"],
                "executable": found.executable, "lamports": found.lamports,
                "owner": str(found.owner), "rentEpoch": 18446744073709551615, "space":
                len(found.data)}

    def _account_info(self, params: list[Any]) -> dict[str, Any]:
        return self._context(self._account_json(_pubkey(params, 0)))

    def _multiple_accounts(self, params: list[Any]) -> dict[str, Any]:
        keys = _param(params, 0)
        if not isinstance(keys, list) or len(keys) > MAX_ACCOUNTS:
            raise RpcError(INVALID_PARAMS, f"Too many inputs provided; max {MAX_ACCOUNTS}")
        return self._context([self._account_json(Pubkey.from_string(str(k))) for k in keys])

    def _token_balance(self, params: list[Any]) -> dict[str, Any]:
        key = _pubkey(params, 0)
        token = self.ledger.token(key)
        if token is None:
            raise RpcError(INVALID_PARAMS, "Invalid param: not a Token account")
        return self._context(self.ledger.ui_token_amount(token))

    def _airdrop(self, params: list[Any]) -> str:
        lamports = int(_param(params, 1))
        if not 0 < lamports <= 1_000 * 10**9:
            raise RpcError(INVALID_PARAMS, "airdrop of 0 < lamports <= 1000 SOL only")
        return self.on_airdrop(_pubkey(params, 0), lamports)


def _param(params: list[Any], index: int) -> Any:
    if len(params) <= index:
        raise RpcError(INVALID_PARAMS, f"missing parameter {index}")
    return params[index]


def _pubkey(params: list[Any], index: int) -> Pubkey:
    try:
        return Pubkey.from_string(str(_param(params, index)))
    except ValueError:
        raise RpcError(INVALID_PARAMS, "Invalid param: Invalid") from None


def _config(params: list[Any]) -> dict[str, Any]:
    config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
    return config


def _decode_tx(params: list[Any], config: dict[str, Any]) -> bytes:
    text = str(_param(params, 0))
    try:
        if config.get("encoding", "base58") == "base64":
            return base64.b64decode(text, validate=True)
        return _b58decode(text)
    except ValueError:
        raise RpcError(INVALID_PARAMS, "failed to decode transaction") from None


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise ValueError(f"not base58: {char!r}")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return bytes(len(text) - len(text.lstrip("1"))) + body


def _error(rid: Any, exc: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": exc.as_json()}



