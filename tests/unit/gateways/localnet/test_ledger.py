"""The local cluster's ledger: real transactions in LiteSVM, the CPMM program played, and the
cluster's own books (slots, blockhash window, signature history, token balances)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from gateways.localnet.ledger import PREFLIGHT_FAILED, SIGNATURE_FEE, Ledger, RpcError
from gateways.solana import cpmm
from tests.kit.localnet import MEMO, SOL, USDC, seeded_ledger


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    ledger: Ledger
    clock: Clock
    wallet: Keypair
    pool: Pubkey

    def swap(self, amount_in: int, minimum_out: int, memo: str = "order-1",
             blockhash: Hash | None = None, signer: Keypair | None = None) -> bytes:
        signer = signer or self.wallet
        state = self.ledger.pool_state(self.pool)
        accounts = cpmm.SwapAccounts.for_pool(self.pool, state, signer.pubkey(), SOL)
        ixs = [Instruction(MEMO, memo.encode(), [AccountMeta(signer.pubkey(), True, False)]),
               cpmm.swap_base_input(accounts, amount_in, minimum_out)]
        if blockhash is None:
            blockhash = Hash.from_string(self.ledger.latest_blockhash()[0])
        return bytes(Transaction.new_signed_with_payer(ixs, signer.pubkey(), [signer],
                                                       blockhash))

    def tokens(self, mint: Pubkey, owner: Pubkey | None = None) -> int:
        owner = owner or self.wallet.pubkey()
        return self.ledger.token_amount(get_associated_token_address(owner, mint)) or 0

    def vault(self, side: int) -> int:
        state = self.ledger.pool_state(self.pool)
        return self.ledger.token_amount((state.token_0_vault, state.token_1_vault)[side]) or 0


@pytest.fixture
def world() -> World:
    clock = Clock()
    ledger, pool, wallet = seeded_ledger(clock=clock)
    return World(ledger, clock, wallet, pool)


def test_a_swap_moves_exactly_the_program_s_amounts_and_pays_the_fee(world: World) -> None:
    lamports = world.ledger.balance(world.wallet.pubkey())
    expected = cpmm.swap_out(10**9, world.vault(0), world.vault(1), cpmm.AmmConfig(2500))

    signature = world.ledger.send(world.swap(10**9, 1))

    assert world.tokens(SOL) == 4 * 10**9
    assert world.tokens(USDC) == expected.amount_out > 149 * 10**6
    assert world.vault(0) == 200_001 * 10**9
    assert world.ledger.balance(world.wallet.pubkey()) == lamports - SIGNATURE_FEE
    done = world.ledger.executed[signature]
    assert done.err is None and done.fee == SIGNATURE_FEE
    deltas = {(b["mint"], b["owner"]): int(b["uiTokenAmount"]["amount"])
              for b in done.post_token_balances}
    before = {(b["mint"], b["owner"]): int(b["uiTokenAmount"]["amount"])
              for b in done.pre_token_balances}
    me = str(world.wallet.pubkey())
    assert deltas[(str(USDC), me)] - before[(str(USDC), me)] == expected.amount_out
    assert any("Memo" in line or "order-1" in line for line in done.logs)


def test_slippage_fails_with_the_program_s_error_and_moves_no_token(world: World) -> None:
    lamports = world.ledger.balance(world.wallet.pubkey())
    tx = world.swap(10**9, 10**12)

    with pytest.raises(RpcError) as preflight:
        world.ledger.send(tx)
    assert preflight.value.code == PREFLIGHT_FAILED
    assert preflight.value.data["err"] == {"InstructionError": [1, {"Custom": 6005}]}
    assert world.ledger.balance(world.wallet.pubkey()) == lamports  # not sent: no fee

    signature = world.ledger.send(tx, skip_preflight=True)

    assert world.ledger.executed[signature].err == {"InstructionError": [1, {"Custom": 6005}]}
    assert world.tokens(SOL) == 5 * 10**9 and world.tokens(USDC) == 0
    assert world.vault(0) == 200_000 * 10**9
    assert world.ledger.balance(world.wallet.pubkey()) == lamports - SIGNATURE_FEE


def test_the_same_bytes_sent_twice_execute_once(world: World) -> None:
    tx = world.swap(10**9, 1)
    first = world.ledger.send(tx)
    again = world.ledger.send(tx, skip_preflight=True)
    with pytest.raises(RpcError) as preflight:
        world.ledger.send(tx)
    assert first == again
    assert preflight.value.data["err"] == "AlreadyProcessed"
    assert world.tokens(SOL) == 4 * 10**9


def test_a_blockhash_expires_after_its_window_and_the_transaction_never_lands(
        world: World) -> None:
    blockhash, last_valid = world.ledger.latest_blockhash()
    tx = world.swap(10**9, 1, blockhash=Hash.from_string(blockhash))
    world.clock.now += 0.4 * (last_valid - world.ledger.block_height() + 1)
    assert world.ledger.block_height() > last_valid

    with pytest.raises(RpcError) as preflight:
        world.ledger.send(tx)
    signature = world.ledger.send(tx, skip_preflight=True)  # accepted, dropped

    assert preflight.value.data["err"] == "BlockhashNotFound"
    assert world.ledger.statuses([signature]) == [None]
    assert world.tokens(SOL) == 5 * 10**9


def test_a_blockhash_inside_the_window_is_still_good(world: World) -> None:
    blockhash, last_valid = world.ledger.latest_blockhash()
    world.clock.now += 0.4 * (last_valid - world.ledger.block_height() - 1)
    world.ledger.send(world.swap(10**9, 1, blockhash=Hash.from_string(blockhash)))
    assert world.tokens(SOL) == 4 * 10**9


def test_confirmation_follows_slot_age(world: World) -> None:
    signature = world.ledger.send(world.swap(10**9, 1))
    levels = []
    for advance in (0.0, 0.4, 0.4 * 32):
        world.clock.now += advance
        (status,) = world.ledger.statuses([signature])
        assert status is not None and status["err"] is None
        levels.append(status["confirmationStatus"])
    assert levels == ["processed", "confirmed", "finalized"]


def test_a_forged_signature_is_refused(world: World) -> None:
    tx = bytearray(world.swap(10**9, 1))
    tx[5] ^= 0xFF  # inside the first signature
    with pytest.raises(RpcError) as refused:
        world.ledger.send(bytes(tx))
    assert refused.value.code == -32003
    assert world.tokens(SOL) == 5 * 10**9


def test_a_swap_from_someone_else_s_account_fails_as_the_token_program_would(
        world: World) -> None:
    thief = Keypair()
    world.ledger.airdrop(thief.pubkey(), 10**9)
    state = world.ledger.pool_state(world.pool)
    accounts = cpmm.SwapAccounts.for_pool(world.pool, state, thief.pubkey(), SOL)
    stolen = cpmm.SwapAccounts(**{**accounts.__dict__, "input_token_account":
                                  get_associated_token_address(world.wallet.pubkey(), SOL)})
    blockhash = Hash.from_string(world.ledger.latest_blockhash()[0])
    tx = Transaction.new_signed_with_payer([cpmm.swap_base_input(stolen, 10**9, 1)],
                                           thief.pubkey(), [thief], blockhash)
    signature = world.ledger.send(bytes(tx), skip_preflight=True)
    assert world.ledger.executed[signature].err is not None
    assert world.tokens(SOL) == 5 * 10**9


def test_more_than_the_wallet_holds_is_insufficient_funds(world: World) -> None:
    signature = world.ledger.send(world.swap(6 * 10**9, 1), skip_preflight=True)
    assert world.ledger.executed[signature].err == {"InstructionError": [1, {"Custom": 1}]}
    assert world.tokens(SOL) == 5 * 10**9


def test_a_failing_native_instruction_after_the_swap_undoes_the_swap(world: World) -> None:
    """Atomicity: the swap ran, then a later instruction failed; nothing of it stays."""
    from solders.system_program import TransferParams, transfer

    state = world.ledger.pool_state(world.pool)
    me = world.wallet.pubkey()
    accounts = cpmm.SwapAccounts.for_pool(world.pool, state, me, SOL)
    too_much = transfer(TransferParams(from_pubkey=me, to_pubkey=Pubkey.new_unique(),
                                       lamports=10**15))
    blockhash = Hash.from_string(world.ledger.latest_blockhash()[0])
    tx = Transaction.new_signed_with_payer(
        [cpmm.swap_base_input(accounts, 10**9, 1), too_much], me, [world.wallet], blockhash)
    lamports = world.ledger.balance(me)

    signature = world.ledger.send(bytes(tx), skip_preflight=True)

    assert world.ledger.executed[signature].err == {"InstructionError": [1, {"Custom": 1}]}
    assert world.tokens(SOL) == 5 * 10**9 and world.tokens(USDC) == 0
    assert world.vault(1) == 30_000_000 * 10**6
    assert world.ledger.balance(me) == lamports - SIGNATURE_FEE


def test_pool_state_round_trips_in_the_real_layout() -> None:
    state = cpmm.PoolState(
        amm_config=Pubkey.new_unique(), token_0_vault=Pubkey.new_unique(),
        token_1_vault=Pubkey.new_unique(), token_0_mint=SOL, token_1_mint=USDC,
        observation_key=Pubkey.new_unique(), mint_0_decimals=9, mint_1_decimals=6,
        protocol_fees=(1, 2), fund_fees=(3, 4), creator_fees=(5, 6), auth_bump=254,
    )
    data = state.encode()
    assert len(data) == cpmm.POOL_STATE_LEN
    assert data[168:200] == bytes(SOL) and data[331] == 9  # token_0_mint, mint_0_decimals
    assert data[397:405] == (5).to_bytes(8, "little")  # creator_fees_token_0
    assert cpmm.PoolState.decode(data) == state
    assert cpmm.AmmConfig.decode(cpmm.AmmConfig(2500).encode()) == cpmm.AmmConfig(2500)
