"""The local Solana cluster's state: LiteSVM, plus what a cluster has and LiteSVM does not.

LiteSVM (solders.litesvm) runs transactions for real: signatures, fees, the System, SPL Token,
Token-2022, Associated Token and Memo programs. It keeps one blockhash and a short signature
history, so the ledger owns the rest: slots on a clock (one every `slot_s`), a blockhash per
slot valid for `valid_blocks` blocks, every signature it ever executed (a duplicate send runs
once), confirmation levels by slot age, and token balances before and after each transaction.

No registry ships the venues' programs, so the ledger plays Raydium CPMM itself
(gateways.solana.cpmm): it checks the instruction as the program would, prices it with the
program's math, and moves real SPL token balances. A transaction is split at its venue
instructions; the other pieces run in LiteSVM (signatures were checked on the original
message first, so LiteSVM's own check is off). Solana's atomicity holds: every account the
message names is saved first, and when any piece fails, all of them are restored and only
the fee is charged, with the error recorded under the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.address_lookup_table_account import ID as ALT_PROGRAM
from solders.address_lookup_table_account import AddressLookupTable
from solders.compute_budget import ID as COMPUTE_BUDGET
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from gateways.solana import cpmm, dlmm
from gateways.solana.ids import NATIVE_MINT

log = logging.getLogger(__name__)

SIGNATURE_FEE = 5000
TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
FINALIZED_AFTER = 32  # slots

# JSON-RPC error codes a Solana node answers with
PREFLIGHT_FAILED = -32002
SIGNATURE_INVALID = -32003
INVALID_PARAMS = -32602


class RpcError(Exception):
    """An error a Solana JSON-RPC server answers (code, message, optional data)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass
class Executed:
    """One executed transaction, as getTransaction and getSignatureStatuses report it."""

    signature: str
    slot: int
    block_time: int
    tx_bytes: bytes
    err: Any  # the RPC JSON form, e.g. {"InstructionError": [2, {"Custom": 6005}]}, or None
    fee: int
    logs: list[str]
    units: int
    pre_balances: list[int]
    post_balances: list[int]
    pre_token_balances: list[dict[str, Any]]
    post_token_balances: list[dict[str, Any]]
    loaded: tuple[list[str], list[str]] = ([], [])  # from lookup tables: writable, readonly


@dataclass
class _Outcome:
    err: Any = None
    logs: list[str] = field(default_factory=list)
    units: int = 0


class Ledger:
    """A Solana cluster in one process: RPC answers from LiteSVM and the ledger's own books."""

    def __init__(self, *, clock: Callable[[], float] = time.time, slot_s: float = 0.4,
                 valid_blocks: int = 150, genesis_slot: int = 1000, seed: str = "dexec",
                 t0: float | None = None) -> None:
        self._clock = clock
        self._slot_s = slot_s
        self._valid_blocks = valid_blocks
        self._genesis = genesis_slot
        self.t0 = clock() if t0 is None else t0  # when the genesis slot began
        self._latest = self.t0
        self._pinned: float | None = None
        self._seed = seed
        self.svm = (LiteSVM().with_sigverify(False).with_blockhash_check(False)
                    .with_transaction_history(0))
        self.executed: dict[str, Executed] = {}
        self.pools: set[Pubkey] = set()  # CPMM pools; their state lives in their accounts
        self.dlmm_pools: set[Pubkey] = set()  # Meteora DLMM pairs, likewise
        self.decimals: dict[Pubkey, int] = {}
        self.adverse_bps = 0  # test hook: every swap is front-run by this much
        # Told every committed transaction (gateways.localnet.cluster keeps a journal of them).
        self.journal: Callable[[dict[str, Any]], None] | None = None

    # -- slots and blockhashes -----------------------------------------------------------

    def now(self) -> float:
        """The cluster's time: pinned for the whole of a transaction, and never going back
        (a wall clock stepped backwards must not make an expired blockhash valid again)."""
        if self._pinned is not None:
            return self._pinned
        self._latest = max(self._latest, self._clock())
        return self._latest

    def slot(self) -> int:
        return self._genesis + int((self.now() - self.t0) / self._slot_s)

    def block_height(self) -> int:
        return self.slot()  # no skipped slots here

    def blockhash_at(self, slot: int) -> Hash:
        return Hash(hashlib.sha256(f"{self._seed}:{slot}".encode()).digest())

    def latest_blockhash(self) -> tuple[str, int]:
        slot = self.slot()
        return str(self.blockhash_at(slot)), slot + self._valid_blocks

    def _blockhash_slot(self, blockhash: Hash) -> int | None:
        """The slot whose blockhash this is, if it is still valid."""
        now = self.slot()
        for slot in range(now, max(self._genesis, now - self._valid_blocks) - 1, -1):
            if self.blockhash_at(slot) == blockhash:
                return slot
        return None

    # -- accounts ------------------------------------------------------------------------

    def account(self, key: Pubkey) -> Account | None:
        found = self.svm.get_account(key)
        return found if found is not None and found.lamports > 0 else None

    def balance(self, key: Pubkey) -> int:
        return self.svm.get_balance(key) or 0

    def airdrop(self, key: Pubkey, lamports: int) -> str:
        result = self.svm.airdrop(key, lamports)
        if isinstance(result, FailedTransactionMetadata):
            raise RpcError(-32603, f"airdrop failed: {result.err()}")
        signature = str(result.signature())
        self.executed[signature] = Executed(
            signature, self.slot(), int(self.now()), b"", None, 0, [], 0, [], [], [], [])
        return signature

    def create_mint(self, mint: Pubkey, decimals: int, supply: int = 0) -> None:
        data = bytes(Mint(mint_authority=None, supply=supply, decimals=decimals,
                          is_initialized=True, freeze_authority=None))
        self._put(mint, data, TOKEN_PROGRAM)
        self.decimals[mint] = decimals

    def set_token_account(self, address: Pubkey, mint: Pubkey, owner: Pubkey, amount: int,
                          ) -> None:
        """Write a token account; for the native mint, a wrapped-SOL account (its lamports
        are the rent reserve plus the amount, as SyncNative expects)."""
        rent = self.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_LEN)
        native = mint == NATIVE_MINT
        data = bytes(TokenAccount(mint=mint, owner=owner, amount=amount, delegate=None,
                                  state=TokenAccountState.Initialized,
                                  is_native=rent if native else None, delegated_amount=0))
        self.svm.set_account(address, Account(lamports=rent + (amount if native else 0),
                                              data=data, owner=TOKEN_PROGRAM, executable=False))

    def fund_tokens(self, owner: Pubkey, mint: Pubkey, amount: int) -> Pubkey:
        """Give `owner` `amount` more of `mint` in its associated token account."""
        ata = get_associated_token_address(owner, mint)
        held = self.token_amount(ata) or 0
        self.set_token_account(ata, mint, owner, held + amount)
        return ata

    def token_amount(self, address: Pubkey) -> int | None:
        token = self.token(address)
        return None if token is None else token.amount

    def ui_token_amount(self, token: TokenAccount) -> dict[str, Any]:
        """A token account's balance as the RPC shows it (`uiTokenAmount`)."""
        decimals = self.decimals.get(token.mint, 0)
        return {"amount": str(token.amount), "decimals": decimals,
                "uiAmount": token.amount / 10 ** decimals,
                "uiAmountString": _ui_string(token.amount, decimals)}

    def _put(self, address: Pubkey, data: bytes, owner: Pubkey) -> None:
        lamports = self.svm.minimum_balance_for_rent_exemption(len(data))
        self.svm.set_account(address, Account(lamports=lamports, data=data, owner=owner,
                                              executable=False))

    # -- pools ---------------------------------------------------------------------------

    def add_cpmm_pool(self, mint_0: Pubkey, mint_1: Pubkey, reserve_0: int, reserve_1: int,
                      trade_fee_rate: int = 2500) -> Pubkey:
        """Create a CPMM pool (config, state, vaults, observation) holding the reserves."""
        config = Pubkey.find_program_address(
            [b"amm_config", trade_fee_rate.to_bytes(2, "big")], cpmm.PROGRAM_ID)[0]
        if self.account(config) is None:
            self._put(config, cpmm.AmmConfig(trade_fee_rate).encode(), cpmm.PROGRAM_ID)
        address = Pubkey.find_program_address(
            [b"pool", bytes(config), bytes(mint_0), bytes(mint_1)], cpmm.PROGRAM_ID)[0]
        vaults = [Pubkey.find_program_address([b"pool_vault", bytes(address), bytes(m)],
                                              cpmm.PROGRAM_ID)[0] for m in (mint_0, mint_1)]
        observation = Pubkey.find_program_address([b"observation", bytes(address)],
                                                  cpmm.PROGRAM_ID)[0]
        authority, bump = cpmm.authority()
        state = cpmm.PoolState(
            amm_config=config, token_0_vault=vaults[0], token_1_vault=vaults[1],
            token_0_mint=mint_0, token_1_mint=mint_1, observation_key=observation,
            mint_0_decimals=self.decimals[mint_0], mint_1_decimals=self.decimals[mint_1],
            auth_bump=bump,
        )
        self._put(address, state.encode(), cpmm.PROGRAM_ID)
        self._put(observation, bytes(8), cpmm.PROGRAM_ID)
        self.set_token_account(vaults[0], mint_0, authority, reserve_0)
        self.set_token_account(vaults[1], mint_1, authority, reserve_1)
        self.pools.add(address)
        return address

    def add_dlmm_pool(self, seeded: dlmm.SeededPool) -> Pubkey:
        """Create a Meteora DLMM pair: its LbPair, bin arrays, oracle and reserve accounts."""
        pair = seeded.pair
        self._put(seeded.address, pair.encode(), dlmm.PROGRAM_ID)
        for array in seeded.arrays:
            self._put(seeded.array_address(array.index), array.encode(), dlmm.PROGRAM_ID)
        self._put(pair.oracle, bytes(8), dlmm.PROGRAM_ID)
        # The program's reserves are token accounts owned by the pair itself.
        self.set_token_account(pair.reserve_x, pair.token_x_mint, seeded.address,
                               seeded.amount_x)
        self.set_token_account(pair.reserve_y, pair.token_y_mint, seeded.address,
                               seeded.amount_y)
        self.dlmm_pools.add(seeded.address)
        return seeded.address

    def set_cpmm_reserves(self, address: Pubkey, reserve_0: int, reserve_1: int) -> None:
        """Set a pool's vault balances (the price walk: what arbitrage would have traded)."""
        state = self.pool_state(address)
        owed0, owed1 = state.owed(0), state.owed(1)
        for vault, amount in ((state.token_0_vault, reserve_0 + owed0),
                              (state.token_1_vault, reserve_1 + owed1)):
            self._move(vault, amount - (self.token_amount(vault) or 0))

    def _front_run(self, pool: Pubkey, state: cpmm.PoolState, side_in: int, bps: int) -> None:
        """Make `bps` worse the output per input of a swap selling token `side_in` (k kept)."""
        vaults = (state.token_0_vault, state.token_1_vault)
        r = [(self.token_amount(v) or 0) - state.owed(i) for i, v in enumerate(vaults)]
        root = math.sqrt(1 + bps / 10_000)
        r[side_in], r[1 - side_in] = int(r[side_in] * root), int(r[1 - side_in] / root)
        self.set_cpmm_reserves(pool, r[0], r[1])

    def _front_run_dlmm(self, address: Pubkey, pair: dlmm.LbPair, arrays: list[dlmm.BinArray],
                        amount_in: int, swap_for_y: bool, now: int,
                        ) -> tuple[dlmm.LbPair, list[dlmm.BinArray]]:
        """Trade ahead of a swap until it would get `adverse_bps` less; keep that trade."""
        fair = dlmm.quote(pair, arrays, amount_in, swap_for_y, now).amount_out
        target = fair * (10_000 - self.adverse_bps) // 10_000
        low, high = 0, amount_in
        while dlmm.quote(*_after(pair, arrays, high, swap_for_y, now), amount_in, swap_for_y,
                         now).amount_out > target:
            low, high = high, high * 2
        for _ in range(40):  # the smallest front-run that does it, within 1/2**40
            middle = (low + high) // 2
            if middle in (low, high):
                break
            moved = dlmm.quote(*_after(pair, arrays, middle, swap_for_y, now), amount_in,
                               swap_for_y, now).amount_out
            low, high = (middle, high) if moved > target else (low, middle)
        return self._dlmm_fill(address, pair, arrays, high, swap_for_y, now)

    def _dlmm_fill(self, address: Pubkey, pair: dlmm.LbPair, arrays: list[dlmm.BinArray],
                   amount_in: int, swap_for_y: bool, now: int,
                   ) -> tuple[dlmm.LbPair, list[dlmm.BinArray]]:
        """Fill a trade of someone outside the wallet's view against the pair (its tokens
        come from and go nowhere); return the pair and arrays after it."""
        ahead = dlmm.quote(pair, arrays, amount_in, swap_for_y, now)
        reserve_in, reserve_out = ((pair.reserve_x, pair.reserve_y) if swap_for_y
                                   else (pair.reserve_y, pair.reserve_x))
        self._move(reserve_in, ahead.amount_in)
        self._move(reserve_out, -ahead.amount_out)
        changed = {a.index: a for a in dlmm.apply(arrays, ahead)}
        self._put_data(address, ahead.pair.encode())
        for array in changed.values():
            self._put_data(dlmm.bin_array_address(address, array.index), array.encode())
        return ahead.pair, [changed.get(a.index, a) for a in arrays]

    def dlmm_state(self, address: Pubkey) -> tuple[dlmm.LbPair, list[dlmm.BinArray]]:
        """A DLMM pair and every bin array its bitmap names."""
        pair = dlmm.LbPair.decode(bytes(self._existing(address).data))
        arrays = []
        for bit in range(pair.bin_array_bitmap.bit_length()):
            if pair.bin_array_bitmap >> bit & 1:
                key = dlmm.bin_array_address(address, bit - dlmm.BITMAP_HALF)
                arrays.append(dlmm.BinArray.decode(bytes(self._existing(key).data)))
        return pair, arrays

    def move_dlmm_to(self, address: Pubkey, target_id: int) -> int:
        """An arbitrageur's trade that brings the pair's active bin to `target_id` (or as far
        as its liquidity goes); return the amount traded in (0: nothing to do)."""
        pair, arrays = self.dlmm_state(address)
        if target_id == pair.active_id:
            return 0
        swap_for_y = target_id < pair.active_id  # selling X walks the price down
        moment = self.now()
        now = int(moment)

        def reaches(amount: int) -> bool:
            try:
                active = dlmm.quote(pair, arrays, amount, swap_for_y, now).pair.active_id
            except dlmm.DlmmError:  # past the liquidity: it goes at least that far
                return True
            return active <= target_id if swap_for_y else active >= target_id

        low, high = 0, 1
        while not reaches(high):
            low, high = high, high * 2
        while high - low > 1:  # the smallest trade that gets there
            middle = (low + high) // 2
            low, high = (low, middle) if reaches(middle) else (middle, high)
        try:
            self._dlmm_fill(address, pair, arrays, high, swap_for_y, now)
        except dlmm.DlmmError:
            return 0  # the bins run out before the target: leave the pair where it is
        if self.journal is not None:
            # The moment the trade used, as a transaction's entry carries its own: the
            # journal's own clock reads later, and across a second's edge the replayed pair
            # would keep another timestamp (seen as a rare failure on a loaded machine).
            self.journal({"op": "dlmm", "pool": str(address), "amount": high,
                          "for_y": swap_for_y, "t": moment})
        return high

    def fill_dlmm(self, address: Pubkey, amount_in: int, swap_for_y: bool) -> None:
        """Do a journaled `move_dlmm_to` trade again (the journal's replay)."""
        pair, arrays = self.dlmm_state(address)
        self._dlmm_fill(address, pair, arrays, amount_in, swap_for_y, int(self.now()))

    def pool_state(self, address: Pubkey) -> cpmm.PoolState:
        return cpmm.PoolState.decode(bytes(self._existing(address).data))

    # -- transactions --------------------------------------------------------------------

    def send(self, tx_bytes: bytes, *, skip_preflight: bool = False) -> str:
        """Execute a signed transaction once; answer its signature (sendTransaction).

        One moment for the whole transaction (its blockhash check, the programs' clocks,
        its slot, its journal entry), so a replay at that moment runs it the same way.
        """
        if self._pinned is not None:  # a replay pinned it already
            return self._send(tx_bytes, skip_preflight)
        self._pinned = self.now()
        try:
            return self._send(tx_bytes, skip_preflight)
        finally:
            self._pinned = None

    def _send(self, tx_bytes: bytes, skip_preflight: bool) -> str:
        tx = self.parse(tx_bytes)
        signature = str(tx.signatures[0])
        if not all(tx.verify_with_results()):
            raise RpcError(SIGNATURE_INVALID, "Transaction signature verification failure")
        if signature in self.executed:
            if skip_preflight:
                return signature  # a duplicate: the cluster executes it once
            raise RpcError(PREFLIGHT_FAILED, "Transaction simulation failed: This transaction"
                           " has already been processed", {"err": "AlreadyProcessed",
                                                            "logs": []})
        if self._blockhash_slot(tx.message.recent_blockhash) is None:
            if skip_preflight:
                return signature  # accepted, and never lands: the sender learns by height
            raise RpcError(PREFLIGHT_FAILED, "Transaction simulation failed: Blockhash not"
                           " found", {"err": "BlockhashNotFound", "logs": []})
        fee = self._fee(tx)
        if self.balance(tx.message.account_keys[0]) < fee:
            if skip_preflight:
                return signature  # a payer that cannot pay the fee: nothing lands
            raise RpcError(PREFLIGHT_FAILED, "Transaction simulation failed: Attempt to debit"
                           " an account but found no record of a prior credit.",
                           {"err": "InsufficientFundsForFee", "logs": []})
        if not skip_preflight:
            trial = self._run(tx, commit=False)
            if trial.err is not None:
                raise RpcError(PREFLIGHT_FAILED, "Transaction simulation failed: Error"
                               f" processing Instruction: {json.dumps(trial.err)}",
                               {"err": trial.err, "logs": trial.logs})
        self._run(tx, commit=True, tx_bytes=tx_bytes)
        return signature

    def simulate(self, tx_bytes: bytes) -> dict[str, Any]:
        """Run without keeping anything (simulateTransaction; no signature check)."""
        tx = self.parse(tx_bytes)
        outcome = self._run(tx, commit=False)
        return {"err": outcome.err, "logs": outcome.logs, "accounts": None,
                "unitsConsumed": outcome.units, "returnData": None}

    def statuses(self, signatures: list[str]) -> list[dict[str, Any] | None]:
        now = self.slot()
        answers: list[dict[str, Any] | None] = []
        for signature in signatures:
            found = self.executed.get(signature)
            if found is None:
                answers.append(None)
                continue
            age = now - found.slot
            level = ("finalized" if age >= FINALIZED_AFTER else
                     "confirmed" if age >= 1 else "processed")
            answers.append({
                "slot": found.slot,
                "confirmations": None if level == "finalized" else age,
                "err": found.err,
                "status": {"Ok": None} if found.err is None else {"Err": found.err},
                "confirmationStatus": level,
            })
        return answers

    @staticmethod
    def _fee(tx: VersionedTransaction) -> int:
        """5,000 lamports a signature, plus the priority fee: the compute unit limit (200,000
        an instruction when unset, at most 1.4M) times its price in micro-lamports."""
        message = tx.message
        keys = list(message.account_keys)
        limit, price, count = None, 0, 0
        for compiled in message.instructions:
            data = bytes(compiled.data)
            if keys[compiled.program_id_index] != COMPUTE_BUDGET:
                count += 1
            elif len(data) == 5 and data[0] == 2:
                limit = int.from_bytes(data[1:5], "little")
            elif len(data) == 9 and data[0] == 3:
                price = int.from_bytes(data[1:9], "little")
        units = min(limit if limit is not None else 200_000 * count, 1_400_000)
        return SIGNATURE_FEE * message.header.num_required_signatures + \
            -(-units * price // 1_000_000)

    @staticmethod
    def parse(tx_bytes: bytes) -> VersionedTransaction:
        """The transaction in `tx_bytes`, or the RPC error a node answers for it."""
        try:
            tx = VersionedTransaction.from_bytes(tx_bytes)
        except Exception as exc:
            raise RpcError(INVALID_PARAMS, f"failed to deserialize transaction: {exc}") from None
        return tx

    def add_lookup_table(self, addresses: list[Pubkey], seed: str) -> Pubkey:
        """An address lookup table (active, its authority the default key) holding
        `addresses`, at an address derived from `seed`."""
        key = Pubkey.create_with_seed(Pubkey.default(), seed, ALT_PROGRAM)
        meta = struct.pack("<IQQB", 1, 2**64 - 1, 0, 0) + b"\x01" + bytes(Pubkey.default())
        self._put(key, meta + b"\x00\x00" + b"".join(bytes(a) for a in addresses),
                  ALT_PROGRAM)
        return key

    def resolve(self, message: Any) -> tuple[list[Pubkey], int, int]:
        """Every account key of a message, the ones loaded from lookup tables after the
        static ones (writable first), as the runtime orders them; with the counts loaded."""
        keys = list(message.account_keys)
        if not isinstance(message, MessageV0) or not message.address_table_lookups:
            return keys, 0, 0
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in message.address_table_lookups:
            found = self.account(lookup.account_key)
            if found is None or found.owner != ALT_PROGRAM:
                raise RpcError(INVALID_PARAMS, "Transaction loads an address table account"
                               " that doesn't exist")
            table = AddressLookupTable.deserialize(bytes(found.data)).addresses
            try:
                writable += [table[i] for i in bytes(lookup.writable_indexes)]
                readonly += [table[i] for i in bytes(lookup.readonly_indexes)]
            except IndexError:
                raise RpcError(INVALID_PARAMS, "Transaction address table lookup uses an"
                               " invalid index") from None
        return keys + writable + readonly, len(writable), len(readonly)

    def _run(self, tx: VersionedTransaction, *, commit: bool, tx_bytes: bytes = b"",
             ) -> _Outcome:
        message = tx.message
        keys, n_writable, n_readonly = self.resolve(message)
        loaded = len(keys) - n_writable - n_readonly
        payer = keys[0]
        saved = {key: self.svm.get_account(key) for key in keys}
        pre_tokens = self._token_balances(keys)
        pre_balances = [self.balance(k) for k in keys]
        fee = self._fee(tx)
        try:
            outcome = self._execute(message, keys, loaded + n_writable)
        except Exception as exc:  # a bug here must not leave half a transaction behind
            log.exception("transaction %s failed inside the cluster", tx.signatures[0])
            outcome = _Outcome(err="ProgramFailedToComplete", logs=[f"cluster error: {exc}"])
        if outcome.err is not None or not commit:
            self._restore(saved)  # a transaction lands whole or not at all
        if commit:
            self._charge(payer, fee)  # paid even when it failed
            if self.journal is not None:
                entry = {"op": "tx", "b": base64.b64encode(bytes(tx)).decode(), "t": self.now()}
                if self.adverse_bps:
                    entry["adverse"] = self.adverse_bps
                self.journal(entry)
            signature = str(tx.signatures[0])
            self.executed[signature] = Executed(
                signature, self.slot(), int(self.now()), tx_bytes, outcome.err, fee,
                outcome.logs, outcome.units, pre_balances, [self.balance(k) for k in keys],
                pre_tokens, self._token_balances(keys),
                ([str(k) for k in keys[loaded:loaded + n_writable]],
                 [str(k) for k in keys[loaded + n_writable:]]))
        return outcome

    def _execute(self, message: Any, keys: list[Pubkey], writable_end: int) -> _Outcome:
        """Run the instructions in order: venue ones here, runs of the others in LiteSVM."""
        outcome = _Outcome()
        pending: list[tuple[int, Instruction]] = []
        for index, compiled in enumerate(message.instructions):
            program = keys[compiled.program_id_index]
            accounts = [keys[i] for i in compiled.accounts]
            if program in (cpmm.PROGRAM_ID, dlmm.PROGRAM_ID):
                if pending and not self._run_native(pending, keys[0], outcome):
                    return outcome
                pending = []
                play = self._play_cpmm if program == cpmm.PROGRAM_ID else self._play_dlmm
                code, logs = play(bytes(compiled.data), accounts, keys[0])
                outcome.logs += logs
                if code is not None:
                    outcome.err = {"InstructionError": [index, {"Custom": code}]}
                    return outcome
            else:
                metas = [AccountMeta(keys[i], message.is_signer(i),
                                     _is_writable(message, i, writable_end))
                         for i in compiled.accounts]
                pending.append((index, Instruction(program, bytes(compiled.data), metas)))
        if pending:
            self._run_native(pending, keys[0], outcome)
        return outcome

    def _run_native(self, pending: list[tuple[int, Instruction]], payer: Pubkey,
                    outcome: _Outcome) -> bool:
        """Run instructions in LiteSVM; give back the fee it takes (charged once, later)."""
        msg = Message.new_with_blockhash([ix for _, ix in pending], payer,
                                         self.svm.latest_blockhash())
        tx = Transaction.populate(msg, [Signature.default()] * msg.header.num_required_signatures)
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            outcome.logs += list(meta.logs())
            outcome.units += meta.compute_units_consumed()
            err = json.loads(result.to_json())["err"]
            if isinstance(err, dict) and "InstructionError" in err:
                err["InstructionError"][0] = pending[err["InstructionError"][0]][0]
            outcome.err = err
            return False
        outcome.logs += list(result.logs())
        outcome.units += result.compute_units_consumed()
        self._charge(payer, -result.fee())  # given back: the fee is charged once, in _run
        return True

    def _play_cpmm(self, data: bytes, accounts: list[Pubkey], payer: Pubkey,
                   ) -> tuple[int | None, list[str]]:
        """Raydium CPMM `swap_base_input`, as the program runs it; (error code, logs)."""
        logs = [f"Program {cpmm.PROGRAM_ID} invoke [1]", "Program log: Instruction: SwapBaseInput"]

        def fail(code: int, why: str) -> tuple[int, list[str]]:
            return code, [*logs, f"Program log: {why}",
                          f"Program {cpmm.PROGRAM_ID} failed: custom program error: {code:#x}"]

        try:
            acc, amount_in, minimum_out = cpmm.decode_swap_base_input(data, accounts)
        except ValueError as exc:
            return fail(cpmm.INVALID_INPUT, str(exc))
        if acc.pool_state not in self.pools:
            return fail(cpmm.INVALID_INPUT, "unknown pool")
        state = self.pool_state(acc.pool_state)
        if acc.amm_config != state.amm_config:
            return fail(cpmm.INVALID_INPUT, "wrong config")
        if acc.payer != payer or acc.authority != cpmm.authority()[0] \
                or acc.observation_state != state.observation_key:
            return fail(cpmm.INVALID_INPUT, "wrong payer, authority or observation account")
        vaults = (state.token_0_vault, state.token_1_vault)
        if {acc.input_vault, acc.output_vault} != set(vaults):
            return fail(cpmm.INVALID_VAULT, "vaults are not the pool's")
        side_in = vaults.index(acc.input_vault)
        mints = (state.token_0_mint, state.token_1_mint)
        if acc.input_token_mint != mints[side_in] or acc.output_token_mint != mints[1 - side_in]:
            return fail(cpmm.INVALID_INPUT, "mints do not match the vaults")
        if state.status & cpmm.SWAP_DISABLED_BIT:
            return fail(cpmm.NOT_APPROVED, "swaps are disabled")
        if amount_in == 0:
            return fail(cpmm.ZERO_TRADING_TOKENS, "amount_in is zero")
        user_in = self.token(acc.input_token_account)
        user_out = self.token(acc.output_token_account)
        if user_in is None or user_out is None or user_in.owner != payer \
                or user_in.mint != acc.input_token_mint or user_out.mint != acc.output_token_mint:
            # The token program's transfer fails: the source must be the signer's.
            return fail(4, "owner does not match")  # SPL Token OwnerMismatch
        if user_in.amount < amount_in:
            return 1, [*logs, "Program log: Error: insufficient funds",
                       f"Program {cpmm.PROGRAM_ID} failed: custom program error: 0x1"]
        if self.adverse_bps:  # a front-runner moves the price against this swap first
            self._front_run(acc.pool_state, state, side_in, self.adverse_bps)
        vault_in = self.token_amount(acc.input_vault) or 0
        vault_out = self.token_amount(acc.output_vault) or 0
        reserve_in = vault_in - state.owed(side_in)
        reserve_out = vault_out - state.owed(1 - side_in)
        if reserve_in < 0 or reserve_out <= 0:
            return fail(cpmm.INSUFFICIENT_VAULT, "vault holds less than the fees owed")
        config = cpmm.AmmConfig.decode(bytes(self._existing(state.amm_config).data))
        math = cpmm.swap_out(amount_in, reserve_in, reserve_out, config)
        if math.amount_out < minimum_out:
            return fail(cpmm.EXCEEDED_SLIPPAGE,
                        f"Error: exceeds desired slippage limit {math.amount_out} < {minimum_out}")
        if math.amount_out >= reserve_out:
            return fail(cpmm.INSUFFICIENT_VAULT, "not enough liquidity")
        self._move(acc.input_token_account, -amount_in)
        self._move(acc.input_vault, amount_in)
        self._move(acc.output_vault, -math.amount_out)
        self._move(acc.output_token_account, math.amount_out)
        fees = [list(state.protocol_fees), list(state.fund_fees)]
        fees[0][side_in] += math.protocol_fee
        fees[1][side_in] += math.fund_fee
        self._put_data(acc.pool_state, _replace_fees(state, fees).encode())
        return None, [*logs, f"Program log: swap in {amount_in} out {math.amount_out}",
                      f"Program {cpmm.PROGRAM_ID} success"]

    def _play_dlmm(self, data: bytes, accounts: list[Pubkey], payer: Pubkey,
                   ) -> tuple[int | None, list[str]]:
        """Meteora DLMM `swap`, as the program runs it; (error code, logs)."""
        program = dlmm.PROGRAM_ID
        logs = [f"Program {program} invoke [1]", "Program log: Instruction: Swap"]

        def fail(code: int, why: str) -> tuple[int, list[str]]:
            return code, [*logs, f"Program log: {why}",
                          f"Program {program} failed: custom program error: {code:#x}"]

        try:
            acc, amount_in, minimum_out, array_keys = dlmm.decode_swap(data, accounts)
        except ValueError as exc:
            return fail(dlmm.INVALID_INPUT, str(exc))
        if acc.lb_pair not in self.dlmm_pools or acc.user != payer:
            return fail(dlmm.INVALID_INPUT, "unknown pair or wrong user")
        pair = dlmm.LbPair.decode(bytes(self._existing(acc.lb_pair).data))
        if (acc.reserve_x, acc.reserve_y) != (pair.reserve_x, pair.reserve_y) \
                or (acc.token_x_mint, acc.token_y_mint) != (pair.token_x_mint, pair.token_y_mint):
            return fail(dlmm.INVALID_INPUT, "reserves or mints are not the pair's")
        user_in, user_out = self.token(acc.user_token_in), self.token(acc.user_token_out)
        if user_in is None or user_out is None or user_in.owner != payer:
            return fail(4, "owner does not match")  # the token program's transfer fails
        if {user_in.mint, user_out.mint} != {pair.token_x_mint, pair.token_y_mint} \
                or user_in.mint == user_out.mint:
            return fail(dlmm.INVALID_TOKEN_MINT, "user accounts are not for the pair's mints")
        swap_for_y = user_in.mint == pair.token_x_mint
        if user_in.amount < amount_in:
            return 1, [*logs, "Program log: Error: insufficient funds",
                       f"Program {program} failed: custom program error: 0x1"]
        arrays = []
        for key in array_keys:
            found = self.account(key)
            if found is None or found.owner != program:
                return fail(dlmm.BIN_ARRAY_NOT_FOUND, f"bin array {key} missing")
            array = dlmm.BinArray.decode(bytes(found.data))
            if array.lb_pair != acc.lb_pair or key != dlmm.bin_array_address(acc.lb_pair,
                                                                             array.index):
                return fail(dlmm.INVALID_INPUT, f"bin array {key} is not this pair's")
            arrays.append(array)
        now = int(self.now())
        try:
            if self.adverse_bps:  # a front-runner trades first, the same way
                pair, arrays = self._front_run_dlmm(acc.lb_pair, pair, arrays, amount_in,
                                                    swap_for_y, now)
            result = dlmm.quote(pair, arrays, amount_in, swap_for_y, now)
        except dlmm.DlmmError as exc:
            return fail(exc.code, exc.message)
        if result.amount_out < minimum_out:
            return fail(dlmm.EXCEEDED_AMOUNT_SLIPPAGE,
                        f"Error: exceeded amount slippage tolerance {result.amount_out}"
                        f" < {minimum_out}")
        reserve_in, reserve_out = ((pair.reserve_x, pair.reserve_y) if swap_for_y
                                   else (pair.reserve_y, pair.reserve_x))
        self._move(acc.user_token_in, -amount_in)
        self._move(reserve_in, amount_in)
        self._move(reserve_out, -result.amount_out)
        self._move(acc.user_token_out, result.amount_out)
        self._put_data(acc.lb_pair, result.pair.encode())
        for array in dlmm.apply(arrays, result):
            self._put_data(dlmm.bin_array_address(acc.lb_pair, array.index), array.encode())
        return None, [*logs, f"Program log: swap in {amount_in} out {result.amount_out}",
                      f"Program {program} success"]

    def token(self, address: Pubkey) -> TokenAccount | None:
        """The token account at `address`, or None when there is no token account there."""
        found = self.account(address)
        if found is None or found.owner != TOKEN_PROGRAM or len(found.data) != TOKEN_ACCOUNT_LEN:
            return None
        return TokenAccount.from_bytes(bytes(found.data))

    def _move(self, address: Pubkey, delta: int) -> None:
        found = self._existing(address)
        data = bytearray(found.data)
        amount = int.from_bytes(data[64:72], "little") + delta
        data[64:72] = amount.to_bytes(8, "little")
        # Wrapped SOL is lamports: the account's lamports follow its token amount.
        lamports = found.lamports + (delta if bytes(data[:32]) == bytes(NATIVE_MINT) else 0)
        self.svm.set_account(address, Account(lamports, bytes(data), found.owner,
                                              found.executable, found.rent_epoch))

    def _put_data(self, address: Pubkey, data: bytes) -> None:
        found = self._existing(address)
        self.svm.set_account(address, Account(found.lamports, data, found.owner,
                                              found.executable, found.rent_epoch))

    def _existing(self, address: Pubkey) -> Account:
        found = self.svm.get_account(address)
        if found is None:
            raise RuntimeError(f"account {address} vanished mid-transaction")
        return found

    def _charge(self, payer: Pubkey, lamports: int) -> None:
        found = self.svm.get_account(payer)
        if found is None:
            return
        self.svm.set_account(payer, Account(max(0, found.lamports - lamports), found.data,
                                            found.owner, found.executable, found.rent_epoch))

    def _restore(self, saved: dict[Pubkey, Account | None]) -> None:
        for key, account in saved.items():
            self.svm.set_account(key, account if account is not None else Account.default())

    def _token_balances(self, keys: list[Pubkey]) -> list[dict[str, Any]]:
        balances = []
        for index, key in enumerate(keys):
            token = self.token(key)
            if token is None:
                continue
            balances.append({
                "accountIndex": index, "mint": str(token.mint), "owner": str(token.owner),
                "programId": str(TOKEN_PROGRAM), "uiTokenAmount": self.ui_token_amount(token),
            })
        return balances


def _is_writable(message: Any, index: int, writable_end: int) -> bool:
    """Is key `index` writable: by the header for static keys; loaded ones are writable
    before `writable_end` (the writable lookups come first)."""
    if index >= len(message.account_keys):
        return index < writable_end
    header = message.header
    signed = header.num_required_signatures
    if index < signed:
        return bool(index < signed - header.num_readonly_signed_accounts)
    unsigned = len(message.account_keys) - signed
    return bool(index - signed < unsigned - header.num_readonly_unsigned_accounts)


def _replace_fees(state: cpmm.PoolState, fees: list[list[int]]) -> cpmm.PoolState:
    from dataclasses import replace

    return replace(state, protocol_fees=(fees[0][0], fees[0][1]),
                   fund_fees=(fees[1][0], fees[1][1]))


def _ui_string(amount: int, decimals: int) -> str:
    if decimals == 0:
        return str(amount)
    whole, frac = divmod(amount, 10 ** decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return text


def _after(pair: dlmm.LbPair, arrays: list[dlmm.BinArray], amount: int, swap_for_y: bool,
           now: int) -> tuple[dlmm.LbPair, list[dlmm.BinArray]]:
    """The pair and arrays after a swap of `amount` (nothing when it is 0)."""
    if amount <= 0:
        return pair, arrays
    result = dlmm.quote(pair, arrays, amount, swap_for_y, now)
    changed = {a.index: a for a in dlmm.apply(arrays, result)}
    return result.pair, [changed.get(a.index, a) for a in arrays]
