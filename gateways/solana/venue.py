"""A venue gateway on a real Solana cluster: quotes from pool accounts, swaps as transactions.

One class for every on-chain venue; what differs per program (which accounts to read, the
pool math, the swap instruction) is a `PoolProgram` (Raydium CPMM in gateways.solana.cpmm,
Meteora DLMM in gateways.solana.dlmm). The gateway reads the pool's accounts over RPC in one
`getMultipleAccounts`, prices the swap with the program's own math, and builds the
transaction the program expects: the order memo (every transaction unique), the output token
account created when missing (idempotent), SOL wrapped when it is the input, then the swap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.system_program import TransferParams, transfer
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from core.errors import InsufficientFunds, InvalidInput, NoRoute
from core.quotes import Quote, SignedSwap, TxStatus
from gateways.base import SLOT_S, VenueCalls, VenueMetrics, signing_wallet
from gateways.ratelimit import TokenBucket
from gateways.solana.ids import ATA_PROGRAM, MEMO_PROGRAM, NATIVE_MINT, TOKEN_2022
from gateways.solana.rpc import SolanaRpc, transaction_error

QUOTE_TTL_S = 30.0
# Rent for two new token accounts (the output's and wrapped SOL's, 2,039,280 lamports each).
RENT_RESERVE_LAMPORTS = 2 * 2_039_280
SENT_REMEMBERED = 100_000  # signatures whose resends skip preflight
TRANSACTION_LOOKUPS = 32  # getTransaction calls in flight at once per status round
NETWORK_FEE_LAMPORTS = 5000
SYNC_NATIVE = bytes([17])
CLOSE_ACCOUNT = bytes([9])
CREATE_IDEMPOTENT = bytes([1])
SWAP_COMPUTE_UNITS = 300_000  # the compute unit limit of a swap with a priority fee


@dataclass(frozen=True)
class PoolQuote:
    amount_out: int
    fee: int  # input token base units
    fee_bps: Decimal
    price_impact_bps: int
    route: str  # what the program needs again to build the swap (JSON text)


class NeedAccounts(Exception):
    """The program must read other accounts first (e.g. a pool's vaults once it knows them)."""


Accounts = tuple[list[Pubkey], list[bytes | None]]  # keys read, and their data


class PoolProgram(Protocol):
    """One venue program, as a gateway needs it."""

    def accounts(self, pool: Pubkey, last: Accounts | None) -> list[Pubkey]:
        """The accounts a quote reads in one getMultipleAccounts, given the last ones read."""
        ...

    def quote(self, pool: Pubkey, read: Accounts, input_mint: Pubkey, output_mint: Pubkey,
              amount_in: int) -> PoolQuote:
        """Price the swap from the accounts read; NeedAccounts when they are not enough.
        NoRoute when the pool on the chain does not trade exactly these two mints (a pool
        directory may be wrong: the chain has the last word)."""
        ...

    def swap(self, pool: Pubkey, route: str, wallet: Pubkey, input_mint: Pubkey,
             amount_in: int, min_amount_out: int) -> Instruction: ...


@dataclass(frozen=True)
class Pool:
    address: Pubkey
    mint_x: Pubkey
    mint_y: Pubkey

    def has(self, a: Pubkey, b: Pubkey) -> bool:
        return {a, b} == {self.mint_x, self.mint_y}


@runtime_checkable
class PoolSource(Protocol):
    """Where a venue's pools come from (a pool API, refreshed): `pools()` lists them."""

    async def pools(self) -> list[Pool]: ...


class StaticPools:
    def __init__(self, pools: Sequence[Pool]) -> None:
        self._pools = list(pools)

    async def pools(self) -> list[Pool]:
        return self._pools


def create_ata_idempotent(payer: Pubkey, owner: Pubkey, mint: Pubkey,
                          token_program: Pubkey = TOKEN_PROGRAM) -> Instruction:
    """Associated Token Account program: create `owner`'s account for `mint` unless it exists
    (under `token_program`: SPL Token, or Token-2022 for its mints)."""
    ata = get_associated_token_address(owner, mint, token_program)
    return Instruction(ATA_PROGRAM, CREATE_IDEMPOTENT, [
        AccountMeta(payer, True, True), AccountMeta(ata, False, True),
        AccountMeta(owner, False, False), AccountMeta(mint, False, False),
        AccountMeta(SYSTEM_PROGRAM, False, False), AccountMeta(token_program, False, False),
    ])


def output_token_program(me: Pubkey, mint_out: Pubkey, swap: Instruction) -> Pubkey:
    """The token program of the swap's output account: Token-2022 when the swap pays into
    the wallet's Token-2022 associated account for the mint, SPL Token otherwise."""
    named = {m.pubkey for m in swap.accounts}
    if get_associated_token_address(me, mint_out, TOKEN_2022) in named:
        return TOKEN_2022
    return TOKEN_PROGRAM


def memo_instruction(text: str, signer: Pubkey) -> Instruction:
    return Instruction(MEMO_PROGRAM, text.encode(), [AccountMeta(signer, True, False)])


def swap_instructions(me: Pubkey, mint_in: Pubkey, mint_out: Pubkey, amount_in: int,
                      swap: Instruction, *, priority_micro_lamports: int = 0,
                      wrap_sol: bool = True, unwrap_sol: bool = True) -> list[Instruction]:
    """A swap as a wallet sends it: the priority fee (when one is set), the output account
    created when missing (idempotent), SOL wrapped when it is the input (transfer and
    SyncNative), the swap, and SOL unwrapped when it is the output (the wSOL account closed,
    its lamports home), as Raydium's `wrapSol`/`unwrapSol` do."""
    ixs = []
    if priority_micro_lamports > 0:
        ixs += [set_compute_unit_limit(SWAP_COMPUTE_UNITS),
                set_compute_unit_price(priority_micro_lamports)]
    ixs.append(create_ata_idempotent(me, me, mint_out, output_token_program(me, mint_out, swap)))
    wsol = get_associated_token_address(me, NATIVE_MINT)
    if mint_in == NATIVE_MINT and wrap_sol:
        ixs += [create_ata_idempotent(me, me, NATIVE_MINT),
                transfer(TransferParams(from_pubkey=me, to_pubkey=wsol, lamports=amount_in)),
                Instruction(TOKEN_PROGRAM, SYNC_NATIVE, [AccountMeta(wsol, False, True)])]
    ixs.append(swap)
    if mint_out == NATIVE_MINT and unwrap_sol:
        ixs.append(Instruction(TOKEN_PROGRAM, CLOSE_ACCOUNT, [
            AccountMeta(wsol, False, True), AccountMeta(me, False, True),
            AccountMeta(me, True, False)]))
    return ixs


class SolanaVenue:
    """What every venue gateway on a Solana cluster shares: the wallet's funds check, the
    exactly-once send (preflight the first time, the same bytes rebroadcast after), and the
    landing statuses with each landed swap's real output. Subclasses quote and build."""

    def __init__(self, name: str, rpc: SolanaRpc, wallet: Keypair | None, *,
                 rate_limit_per_s: float = 0.0, metrics: VenueMetrics | None = None,
                 priority_micro_lamports: int = 0) -> None:
        self.name = name
        self.rpc = rpc  # the process's one client of the cluster (the ingress reads balances)
        self._rpc = rpc
        self._wallet = wallet
        self._limit = TokenBucket(rate_limit_per_s)
        self._calls = VenueCalls(name, metrics)
        self._sent: dict[str, None] = {}  # signatures sent once (oldest first): resends skip
        # preflight
        self._balances = SlotCache()
        self._priority = priority_micro_lamports

    async def check_funds(self, input_mint: str, amount_in: int, *, fresh: bool = False,
                          ) -> None:
        """Raise InsufficientFunds unless the wallet holds `amount_in` (plus fees for SOL).

        Balances at most a slot old: a pre-check (the chain has the last word) that costs a
        couple of calls a slot, not per order. A shortfall is looked at again, fresh, before
        it fails an order: a slot-old balance may miss what the wallet just received.
        """
        if self._wallet is None:
            return
        owner = self._wallet.pubkey()
        mint = Pubkey.from_string(input_mint)
        lamports = await self._balances.get(str(owner), self._rpc.balance)
        if mint == NATIVE_MINT:
            held = lamports - 3 * NETWORK_FEE_LAMPORTS - RENT_RESERVE_LAMPORTS
            fee_short = False
        else:
            held = await self._balances.get(str(get_associated_token_address(owner, mint)),
                                            self._token_amount)
            if held == 0:  # none in an SPL Token account: a Token-2022 mint's is elsewhere
                held = await self._balances.get(
                    str(get_associated_token_address(owner, mint, TOKEN_2022)),
                    self._token_amount)
            fee_short = lamports < 3 * NETWORK_FEE_LAMPORTS
        if (held < amount_in or fee_short) and not fresh:
            self._balances.clear()
            await self.check_funds(input_mint, amount_in, fresh=True)
            return
        if fee_short:
            raise InsufficientFunds("the wallet cannot pay the network fee", venue=self.name)
        if held < amount_in:
            raise InsufficientFunds(f"the wallet holds {max(held, 0)} base units, the order"
                                    f" needs {amount_in}", venue=self.name)

    async def _token_amount(self, account: str) -> int:
        return await self._rpc.token_balance(account) or 0

    async def send(self, swap: SignedSwap) -> None:
        """Send the signed bytes: checked by the node the first time, rebroadcast as they are."""
        async with self._calls.call("send"):
            await self._limit.acquire()
            first = swap.signature not in self._sent
            self._sent[swap.signature] = None
            while len(self._sent) > SENT_REMEMBERED:  # oldest first: long expired by now
                self._sent.pop(next(iter(self._sent)))
            await self._rpc.send(swap.tx_bytes, preflight=first)

    async def simulate(self, swap: SignedSwap) -> None:
        async with self._calls.call("simulate"):
            await self._limit.acquire()
            await self._rpc.simulate(swap.tx_bytes)

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        """Landed (confirmed) signatures with their real output; None while not landed."""
        async with self._calls.call("status"):
            await self._limit.acquire()
            states = await self._rpc.statuses(signatures, search_history=True)
            landed = [s for s in states if s is not None and s.confirmed and s.err is None]
            # Each landed swap's output, read from its transaction: the lookups run together
            # (a poll round may find hundreds landed), a bounded number at a time.
            gate = asyncio.Semaphore(TRANSACTION_LOOKUPS)

            async def received(signature: str) -> int:
                async with gate:
                    return await self._received(signature)

            outputs = dict(zip([s.signature for s in landed], await asyncio.gather(
                *(received(s.signature) for s in landed)), strict=True))
            answers: list[TxStatus | None] = []
            for signature, state in zip(signatures, states, strict=True):
                if state is None:
                    answers.append(None)
                elif not state.confirmed:  # seen, not yet confirmed: it may still land
                    answers.append(TxStatus(signature, False, state.slot, pending=True))
                elif state.err is not None:
                    error = transaction_error(state.err)
                    answers.append(TxStatus(signature, False, state.slot, error=str(error),
                                            error_code=error.code))
                else:
                    self._sent.pop(signature, None)
                    answers.append(TxStatus(signature, True, state.slot,
                                            amount_out=outputs[signature]))
            return answers

    async def _received(self, signature: str) -> int:
        """What the wallet received, from the transaction's token balances: the wallet's
        balance that grew or, when the output was SOL unwrapped in the same transaction
        (its wSOL account closed), what the pool paid out."""
        if self._wallet is None:
            return 0
        return await self._rpc.swap_output(signature, str(self._wallet.pubkey()))

    async def block_height(self) -> int:
        async with self._calls.call("height"):
            return await self._rpc.block_height()


class ChainVenue(SolanaVenue):
    """Quotes from and swaps against one venue's pools on a Solana cluster, over RPC: the
    pool's accounts priced with the program's math, the swap instruction built here."""

    def __init__(self, name: str, program: PoolProgram, rpc: SolanaRpc,
                 pools: Sequence[Pool] | PoolSource, wallet: Keypair | None, *,
                 rate_limit_per_s: float = 0.0, metrics: VenueMetrics | None = None,
                 priority_micro_lamports: int = 0) -> None:
        super().__init__(name, rpc, wallet, rate_limit_per_s=rate_limit_per_s,
                         metrics=metrics, priority_micro_lamports=priority_micro_lamports)
        self._program = program
        self._pools: PoolSource = pools if isinstance(pools, PoolSource) else StaticPools(pools)
        self._last: dict[Pubkey, Accounts] = {}  # per pool: the accounts its last quote read

    async def _pool(self, input_mint: Pubkey, output_mint: Pubkey) -> Pool:
        for pool in await self._pools.pools():
            if pool.has(input_mint, output_mint):
                return pool
        raise NoRoute(f"{self.name} has no pool for this pair", venue=self.name)

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        async with self._calls.call("quote"):
            await self._limit.acquire()
            started = time.perf_counter()
            mint_in, mint_out = Pubkey.from_string(input_mint), Pubkey.from_string(output_mint)
            pool = await self._pool(mint_in, mint_out)
            priced = await self._price(pool.address, mint_in, mint_out, amount_in)
            return Quote(
                venue=self.name, pool=str(pool.address), input_mint=input_mint,
                output_mint=output_mint, amount_in=amount_in, amount_out=priced.amount_out,
                fee=priced.fee, fee_bps=priced.fee_bps,
                price_impact_bps=priced.price_impact_bps,
                network_fee_lamports=NETWORK_FEE_LAMPORTS,
                expires_at=time.time() + QUOTE_TTL_S, payload=priced.route,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _price(self, pool: Pubkey, mint_in: Pubkey, mint_out: Pubkey,
                     amount_in: int) -> PoolQuote:
        last = self._last.get(pool)
        for _ in range(5):  # a first read, then wider ones (a DLMM walk past its arrays)
            keys = self._program.accounts(pool, last)
            read = (keys, await self._rpc.accounts([str(k) for k in keys]))
            try:
                priced = self._program.quote(pool, read, mint_in, mint_out, amount_in)
            except NeedAccounts:
                last = read
                continue
            self._last[pool] = read
            return priced
        raise NoRoute(f"{self.name}: pool {pool} cannot be read", venue=self.name)

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        async with self._calls.call("build"):
            wallet = signing_wallet(self.name, self._wallet, quote)
            me = wallet.pubkey()
            mint_in = Pubkey.from_string(quote.input_mint)
            try:
                swap = self._program.swap(Pubkey.from_string(quote.pool), quote.payload, me,
                                          mint_in, quote.amount_in, min_amount_out)
            except (ValueError, KeyError, json.JSONDecodeError) as exc:
                raise InvalidInput(f"cannot build the swap: {exc}", venue=self.name) from None
            ixs = [memo_instruction(memo, me), *swap_instructions(
                me, mint_in, Pubkey.from_string(quote.output_mint), quote.amount_in, swap,
                priority_micro_lamports=self._priority)]
            blockhash, last_valid = await self._rpc.latest_blockhash()
            tx = Transaction.new_signed_with_payer(ixs, me, [wallet],
                                                   Hash.from_string(blockhash))
            return SignedSwap(self.name, str(tx.signatures[0]), bytes(tx), last_valid,
                              min_amount_out)

class SlotCache:
    """Values by key, each fetched anew once it is more than a slot old."""

    def __init__(self, max_age_s: float = SLOT_S, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self._max_age = max_age_s
        self._clock = clock
        self._values: dict[str, tuple[int, float]] = {}

    def clear(self) -> None:
        self._values.clear()

    async def get(self, key: str, fetch: Callable[[str], Awaitable[int]]) -> int:
        found = self._values.get(key)
        now = self._clock()
        if found is None or now - found[1] > self._max_age:
            found = (await fetch(key), now)
            self._values[key] = found
        return found[0]
