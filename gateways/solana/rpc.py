"""The engine's one way to a Solana cluster: JSON-RPC through solana-py, errors translated here.

Local cluster, devnet or mainnet: the same calls. What the exactly-once rule needs
(../shared/reference/dex-apis.md): a blockhash with its `lastValidBlockHeight` (asked at most
once a slot), sends with `maxRetries: 0` (the engine rebroadcasts the same bytes itself),
signature statuses in batches of 256 (with history when reconciling after a restart), the
block height once per poll round, and each landed swap's real output from its token balance
change. Whatever solana-py or its transport raises leaves this module as a core DexecError.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)

from core.errors import (
    BlockhashExpired,
    DexecError,
    InsufficientFunds,
    RateLimited,
    SlippageExceeded,
    TerminalError,
    VenueTimeout,
    VenueUnavailable,
)
from gateways.base import PerSlot
from gateways.solana.ids import NATIVE_MINT, TOKEN_PROGRAMS

MAX_STATUSES = 256  # signatures per getSignatureStatuses
MINT_LEN = 82  # an SPL mint account (Token-2022 mints with extensions are longer)
# Program errors that mean "the output fell below the minimum": Raydium AMM v4 30, CPMM 6005,
# CLMM 6022 (6018 in newer source); Meteora DLMM 6003, 6004; Jupiter 6001.
SLIPPAGE_CODES = frozenset({30, 6005, 6022, 6018, 6003, 6004, 6001})
SLIPPAGE_TEXT = ("slippage", "too little output")
TOKEN_INSUFFICIENT_FUNDS = 1  # SPL Token error 1, also the System program's
# What a node answers getTokenAccountBalance for an account that is not a token account.
NO_TOKEN_ACCOUNT = ("could not find account", "not a token account", "invalid param")

T = TypeVar("T")


@dataclass(frozen=True)
class SignatureState:
    """What the cluster says about one signature it knows."""

    signature: str
    slot: int
    confirmation: str  # processed | confirmed | finalized
    err: Any  # the RPC's JSON error, None when the transaction succeeded

    @property
    def confirmed(self) -> bool:
        return self.confirmation in ("confirmed", "finalized")


def transaction_error(err: Any, logs: Sequence[str] = ()) -> DexecError:
    """Translate a transaction's error (RPC JSON form) into the engine's terms."""
    text = " ".join(logs).lower()
    if err == "BlockhashNotFound":
        return BlockhashExpired("the transaction's blockhash expired")
    if err in ("InsufficientFundsForFee", "InsufficientFundsForRent"):
        return InsufficientFunds(f"the wallet cannot pay the network fee ({err})")
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        code = inner.get("Custom") if isinstance(inner, dict) else None
        if code in SLIPPAGE_CODES or any(t in text for t in SLIPPAGE_TEXT):
            return SlippageExceeded(f"slippage exceeded (instruction {index}, error {code})")
        if code == TOKEN_INSUFFICIENT_FUNDS or "insufficient" in text:
            return InsufficientFunds(f"insufficient funds (instruction {index})")
        return TerminalError(f"transaction failed: instruction {index}: {json.dumps(inner)}")
    return TerminalError(f"transaction failed: {json.dumps(err)}")


def rpc_error_json(err: Any) -> Any:
    """A solders TransactionError as the RPC's JSON: "BlockhashNotFound",
    {"InstructionError": [i, {"Custom": n}]}, {"InstructionError": [i, "InvalidAccountData"]}."""
    if err is None or isinstance(err, (str, dict)):
        return err
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        if isinstance(inner, InstructionErrorCustom):
            return {"InstructionError": [err.index, {"Custom": inner.code}]}
        return {"InstructionError": [err.index, str(inner).rsplit(".", 1)[-1]]}
    if isinstance(err, TransactionErrorFieldless):
        return str(err).rsplit(".", 1)[-1]
    return type(err).__name__.removeprefix("TransactionError")


def _rpc_error_json(exc: RPCException) -> tuple[int | None, str, Any, list[str]]:
    """(code, message, err, logs) of a JSON-RPC error that solana-py raised."""
    payload = exc.args[0] if exc.args else None
    to_json = getattr(payload, "to_json", None)
    raw: Any = json.loads(to_json()) if callable(to_json) else payload
    if not isinstance(raw, dict):
        return None, str(payload), None, []
    found = raw.get("data")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    return raw.get("code"), str(raw.get("message", "")), data.get("err"), list(
        data.get("logs") or [])


def translate(exc: BaseException, what: str) -> DexecError:
    """Any error of a call into a DexecError: retryable, terminal, or expiry."""
    if isinstance(exc, DexecError):
        return exc
    if isinstance(exc, RPCException):
        _code, message, err, logs = _rpc_error_json(exc)
        if err is not None:  # the transaction itself failed (a preflight's verdict)
            return transaction_error(err, logs)
        # Anything else is the node not answering now: unhealthy, behind, a block or the
        # history not available, an internal error, a rate limit in the body. solders'
        # error objects do not carry the JSON-RPC code, and none of these says anything
        # about a transaction's fate: retryable, so the caller reconciles by signature.
        return VenueUnavailable(f"rpc {what}: {message or type(exc).__name__}")
    if isinstance(exc, SolanaRpcException):
        cause = exc.__cause__ or exc.__context__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if status == 429:
            return RateLimited(f"rpc {what}: HTTP 429")
        if cause is not None and "timeout" in type(cause).__name__.lower():
            return VenueTimeout(f"rpc {what}: timed out")
        return VenueUnavailable(f"rpc {what}: {type(cause).__name__ if cause else exc}")
    if isinstance(exc, RPCNoResultException):
        return VenueUnavailable(f"rpc {what}: no result")
    if isinstance(exc, TimeoutError):
        return VenueTimeout(f"rpc {what}: timed out")
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):  # malformed
        return VenueUnavailable(f"rpc {what}: malformed answer ({type(exc).__name__})")
    return VenueUnavailable(f"rpc {what}: {type(exc).__name__}")


class SolanaRpc:
    """A Solana JSON-RPC endpoint, as the engine uses it."""

    def __init__(self, url: str, *, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._client = AsyncClient(url, commitment=Confirmed, timeout=timeout_s,
                                   max_transport_retries=0)
        self._blockhash: PerSlot[tuple[str, int]] = PerSlot(self._fetch_blockhash, clock)
        self._height: PerSlot[int] = PerSlot(self._fetch_height, clock)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, what: str, call: Awaitable[Any], pick: Callable[[Any], T]) -> T:
        """Await a solana-py call and pick what is wanted from its answer; whatever either
        raises leaves as a DexecError (solders' parser can raise a pyo3 PanicException,
        a BaseException, on an answer it does not expect)."""
        try:
            return pick(await call)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise translate(exc, what) from None

    # -- blocks --------------------------------------------------------------------------

    async def latest_blockhash(self) -> tuple[str, int]:
        """(blockhash, lastValidBlockHeight), asked of the cluster at most once a slot."""
        return await self._blockhash.get()

    async def block_height(self) -> int:
        """The confirmed block height, at most a slot old."""
        return await self._height.get()

    async def _fetch_blockhash(self) -> tuple[str, int]:
        return await self._call(
            "getLatestBlockhash", self._client.get_latest_blockhash(Confirmed),
            lambda a: (str(a.value.blockhash), int(a.value.last_valid_block_height)))

    async def _fetch_height(self) -> int:
        return await self._call("getBlockHeight", self._client.get_block_height(Confirmed),
                                lambda a: int(a.value))

    # -- transactions --------------------------------------------------------------------

    async def send(self, tx_bytes: bytes, *, preflight: bool = True) -> str:
        """Send signed bytes once (maxRetries 0); answer the signature.

        A cluster that already has the transaction answers AlreadyProcessed: that is success
        here (the same bytes, sent again). A preflight failure raises its translation.
        """
        opts = TxOpts(skip_preflight=not preflight, preflight_commitment=Confirmed,
                      max_retries=0)
        try:
            return str((await self._client.send_raw_transaction(tx_bytes, opts)).value)
        except RPCException as exc:
            _, _, err, _ = _rpc_error_json(exc)
            if err == "AlreadyProcessed":
                return str(VersionedTransaction.from_bytes(tx_bytes).signatures[0])
            raise translate(exc, "sendTransaction") from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise translate(exc, "sendTransaction") from None

    async def simulate(self, tx_bytes: bytes) -> int:
        """simulateTransaction at the confirmed state: the compute units it would use; the
        error it would fail with, translated, if any.

        What is simulated is an unsigned copy (its signatures zeroed, the blockhash replaced
        by the node's): a signed transaction handed to an RPC provider could be broadcast by
        it and land, and a dry run must never trade.
        """
        try:
            signed = VersionedTransaction.from_bytes(tx_bytes)
            unsigned = VersionedTransaction.populate(
                signed.message, [Signature.default()] * len(signed.signatures))
        except ValueError as exc:
            raise translate(exc, "simulateTransaction") from None
        value = await self._call("simulateTransaction", self._client.simulate_transaction(
            unsigned, sig_verify=False, commitment=Confirmed, replace_recent_blockhash=True),
            lambda a: a.value)
        if value.err is not None:
            raise transaction_error(rpc_error_json(value.err))
        return int(value.units_consumed or 0)

    async def statuses(self, signatures: Sequence[str], *, search_history: bool = False,
                       ) -> list[SignatureState | None]:
        """Each signature's state, None where the cluster has no record (batches of 256)."""
        states: list[SignatureState | None] = []
        for start in range(0, len(signatures), MAX_STATUSES):
            chunk = list(signatures[start:start + MAX_STATUSES])
            found = await self._call("getSignatureStatuses", self._client.get_signature_statuses(
                [Signature.from_string(s) for s in chunk], search_history),
                lambda a: list(a.value))
            for signature, status in zip(chunk, found, strict=True):
                if status is None:
                    states.append(None)
                    continue
                level = status.confirmation_status
                if level is not None:
                    name = str(level).rsplit(".", 1)[-1].lower()
                else:  # older nodes: no level; null confirmations means rooted (finalized)
                    name = "finalized" if status.confirmations is None else "processed"
                states.append(SignatureState(signature, int(status.slot), name,
                                             rpc_error_json(status.err)))
        return states

    async def token_delta(self, signature: str, owner: str, mint: str) -> int:
        """How much `owner`'s balance of `mint` changed in a landed transaction."""
        _, meta = await self._landed(signature)

        def held(balances: Any) -> int:
            return sum(int(b.ui_token_amount.amount) for b in balances or []
                       if str(b.owner) == owner and str(b.mint) == mint)

        return held(meta.post_token_balances) - held(meta.pre_token_balances)

    async def swap_output(self, signature: str, owner: str) -> int:
        """A landed swap's output to `owner`, from the transaction's balance changes.

        A token output: the largest increase of one of `owner`'s token balances (its input
        only falls). SOL unwrapped in the same transaction (its wSOL account closed, so no
        token balance after): what reached the wallet in lamports, plus the fee it paid,
        less what the wSOL account held before (its rent, and any earlier wSOL).
        """
        tx, meta = await self._landed(signature)

        def held(balances: Any) -> dict[str, int]:
            found: dict[str, int] = {}
            for b in balances or []:
                if str(b.owner) == owner:
                    found[str(b.mint)] = found.get(str(b.mint), 0) + int(b.ui_token_amount.amount)
            return found

        before, after = held(meta.pre_token_balances), held(meta.post_token_balances)
        gain = max([0, *(after[m] - before.get(m, 0) for m in after)])
        if gain:
            return gain
        keys = [str(k) for k in tx.message.account_keys]
        loaded = getattr(meta, "loaded_addresses", None)
        if loaded is not None:  # a V0 transaction's keys from lookup tables follow its own
            keys += [str(k) for k in loaded.writable] + [str(k) for k in loaded.readonly]
        if owner not in keys:
            return 0
        me = keys.index(owner)
        wsol = str(get_associated_token_address(Pubkey.from_string(owner), NATIVE_MINT))
        wsol_before = meta.pre_balances[keys.index(wsol)] if wsol in keys else 0
        received = meta.post_balances[me] - meta.pre_balances[me] + meta.fee - wsol_before
        return max(0, int(received))

    async def _landed(self, signature: str) -> tuple[Any, Any]:
        """(transaction, meta) of a landed transaction."""
        found = await self._call("getTransaction", self._client.get_transaction(
            Signature.from_string(signature), "base64", Confirmed, 0),
            lambda a: None if a.value is None else (a.value.transaction.transaction,
                                                   a.value.transaction.meta))
        if found is None or found[1] is None:
            raise VenueUnavailable(f"rpc getTransaction: {signature} not available yet")
        return found

    # -- accounts ------------------------------------------------------------------------

    async def balance(self, pubkey: str) -> int:
        return await self._call("getBalance", self._client.get_balance(
            Pubkey.from_string(pubkey), Confirmed), lambda a: int(a.value))

    async def token_balance(self, account: str) -> int | None:
        """A token account's raw amount; None when there is no such token account."""
        try:
            answer = await self._client.get_token_account_balance(
                Pubkey.from_string(account), Confirmed)
        except RPCException as exc:
            _, message, _, _ = _rpc_error_json(exc)
            if any(t in message.lower() for t in NO_TOKEN_ACCOUNT):
                return None
            raise translate(exc, "getTokenAccountBalance") from None  # the node, not the account
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise translate(exc, "getTokenAccountBalance") from None
        try:
            return int(answer.value.amount)
        except (AttributeError, TypeError, ValueError) as exc:
            raise translate(exc, "getTokenAccountBalance") from None

    async def mint_decimals(self, mint: str) -> int | None:
        """A token mint's decimals (SPL Token or Token-2022), None when `mint` is no mint."""
        try:
            key = Pubkey.from_string(mint)
        except ValueError:
            return None
        found = await self._call("getAccountInfo", self._client.get_account_info(
            key, Confirmed, "base64"), lambda a: a.value)
        if found is None or found.owner not in TOKEN_PROGRAMS:
            return None
        data = bytes(found.data)
        if len(data) < MINT_LEN or data[45] != 1:  # not a mint, or not initialized
            return None
        return data[44]

    async def accounts(self, pubkeys: Sequence[str]) -> list[bytes | None]:
        """The data of each account (None where absent), 100 a call."""
        found: list[bytes | None] = []
        for start in range(0, len(pubkeys), 100):
            chunk = [Pubkey.from_string(k) for k in pubkeys[start:start + 100]]
            found += await self._call(
                "getMultipleAccounts", self._client.get_multiple_accounts(chunk, Confirmed,
                                                                          "base64"),
                lambda a: [bytes(x.data) if x is not None else None for x in a.value])
        return found
