"""The local cluster process: seeded pools, faucet, price walk, and a journal that brings its
state back after its own restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from gateways.localnet.cluster import MINTS, Localnet
from gateways.solana import cpmm
from gateways.solana.venue import create_ata_idempotent, memo_instruction
from tests.kit.localnet import serving


def swap_tx(net: Localnet, wallet: Keypair, pool: Pubkey, amount: int) -> bytes:
    state = net.ledger.pool_state(pool)
    accounts = cpmm.SwapAccounts.for_pool(pool, state, wallet.pubkey(), MINTS["USDC"])
    blockhash = Hash.from_string(net.ledger.latest_blockhash()[0])
    return bytes(Transaction.new_signed_with_payer(
        [memo_instruction("o-1", wallet.pubkey()),
         create_ata_idempotent(wallet.pubkey(), wallet.pubkey(), MINTS["SOL"]),
         cpmm.swap_base_input(accounts, amount, 1)],
        wallet.pubkey(), [wallet], blockhash))


def usdc_sol_pool(net: Localnet) -> Pubkey:
    (listed,) = [p for p in net.pools if p.venue == "raydium" and {p.mint_x, p.mint_y} ==
                 {str(MINTS["SOL"]), str(MINTS["USDC"])}]
    return Pubkey.from_string(listed.address)


def test_every_default_pair_has_a_seeded_pool_near_its_reference_price() -> None:
    net = Localnet(None, profile="zero")
    assert len(net.pools) == 10  # five pairs, on both venues
    assert sorted({p.venue for p in net.pools}) == ["meteora", "raydium"]
    state = net.ledger.pool_state(usdc_sol_pool(net))
    sol = net.ledger.token_amount(state.token_0_vault) or 0
    usdc = net.ledger.token_amount(state.token_1_vault) or 0
    assert 147 < (usdc / 1e6) / (sol / 1e9) < 153  # 150 USDC per SOL, +-2 %


def journaled(tmp_path: Path) -> tuple[Localnet, Keypair, Pubkey]:
    """A journaling cluster whose new wallet got 1 SOL (airdrop) and 500 USDC (faucet):
    (cluster, wallet, its SOL/USDC CPMM pool)."""
    net = Localnet(tmp_path, profile="zero", drift_bps=0)
    net.open()
    wallet = Keypair()
    net.airdrop(wallet.pubkey(), 10**9)
    net.fund(wallet.pubkey(), MINTS["USDC"], 500 * 10**6)
    return net, wallet, usdc_sol_pool(net)


def test_the_journal_brings_balances_signatures_and_slots_back(tmp_path: Path) -> None:
    net, wallet, pool = journaled(tmp_path)
    signature = net.ledger.send(swap_tx(net, wallet, pool, 100 * 10**6))
    net.drift()
    usdc_ata = get_associated_token_address(wallet.pubkey(), MINTS["USDC"])
    sol_ata = get_associated_token_address(wallet.pubkey(), MINTS["SOL"])
    before = (net.ledger.token_amount(usdc_ata), net.ledger.token_amount(sol_ata),
              net.ledger.balance(wallet.pubkey()), net.ledger.pool_state(pool))
    vaults = [net.ledger.token_amount(v) for v in (before[3].token_0_vault,
                                                   before[3].token_1_vault)]
    slot = net.ledger.slot()
    net.close()

    again = Localnet(tmp_path, profile="zero", drift_bps=0)
    assert again.open() == 8  # airdrop, fund, the swap, five price moves (CPMM pools)

    assert (again.ledger.token_amount(usdc_ata), again.ledger.token_amount(sol_ata),
            again.ledger.balance(wallet.pubkey()), again.ledger.pool_state(pool)) == before
    assert [again.ledger.token_amount(v) for v in (before[3].token_0_vault,
                                                   before[3].token_1_vault)] == vaults
    assert again.ledger.statuses([signature])[0] is not None  # the history survived
    assert again.ledger.slot() >= slot  # time went on from where it was
    assert before[0] == 400 * 10**6 and (before[1] or 0) > 0


def test_the_price_walks_and_keeps_the_product(tmp_path: Path) -> None:
    net = Localnet(None, profile="zero", drift_bps=50)
    state = net.ledger.pool_state(usdc_sol_pool(net))

    def reserves() -> tuple[int, int]:
        return (net.ledger.token_amount(state.token_0_vault) or 0,
                net.ledger.token_amount(state.token_1_vault) or 0)

    r0, r1 = reserves()
    prices = set()
    for _ in range(5):
        net.drift()
        a, b = reserves()
        prices.add(b / a)
        assert abs(a * b / (r0 * r1) - 1) < 1e-6
    assert len(prices) == 5


async def test_faucet_pools_and_rpc_over_http(tmp_path: Path) -> None:
    net = Localnet(tmp_path, profile="zero", drift_bps=0)
    net.open()
    owner = Keypair().pubkey()
    try:
        async with serving(net.app()) as url, httpx.AsyncClient(base_url=url) as client:
            pools = (await client.get("/localnet/pools")).json()["pools"]
            funded = await client.post("/localnet/fund", json={
                "owner": str(owner), "tokens": {"USDC": "250.5"}})
            refused = await client.post("/localnet/fund", json={
                "owner": str(owner), "tokens": {"DOGE": "1"}})
            airdrop = (await client.post("/", json={
                "jsonrpc": "2.0", "id": 1, "method": "requestAirdrop",
                "params": [str(owner), 2 * 10**9]})).json()
            health = (await client.post("/", json={"jsonrpc": "2.0", "id": 2,
                                                    "method": "getHealth"})).json()
    finally:
        net.close()
    assert {p["venue"] for p in pools} == {"raydium", "meteora"} and len(pools) == 10
    assert funded.status_code == 200 and refused.status_code == 400
    ata = get_associated_token_address(owner, MINTS["USDC"])
    assert net.ledger.token_amount(ata) == 250_500_000
    assert "result" in airdrop and net.ledger.balance(owner) == 2 * 10**9
    assert health["result"] == "ok"
    journal = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [line.split('"op": "')[1].split('"')[0] for line in journal] == \
        ["genesis", "fund", "airdrop"]


def test_a_restart_under_another_profile_replays_every_transaction(tmp_path: Path) -> None:
    """The chain keeps the slot length it was made with: its recorded blockhashes stay valid."""
    net, wallet, pool = journaled(tmp_path)
    time.sleep(0.2)  # four 50 ms slots in: at 400 ms slots this blockhash would not exist yet
    net.ledger.adverse_bps = 40  # a front-run swap must come back front-run
    signature = net.ledger.send(swap_tx(net, wallet, pool, 100 * 10**6))
    net.ledger.adverse_bps = 0
    state = net.ledger.pool_state(pool)
    vaults = [net.ledger.token_amount(v) for v in (state.token_0_vault, state.token_1_vault)]
    net.close()

    again = Localnet(tmp_path, profile="realistic", drift_bps=0)
    again.open()

    assert again.ledger.statuses([signature])[0] is not None
    assert [again.ledger.token_amount(v) for v in (state.token_0_vault,
                                                   state.token_1_vault)] == vaults


def test_slots_never_go_back_when_the_wall_clock_does() -> None:
    from gateways.localnet.ledger import Ledger

    now = [1000.0]
    ledger = Ledger(clock=lambda: now[0], slot_s=0.4)
    now[0] += 80.0
    ahead = ledger.slot()
    now[0] -= 60.0  # an NTP step backwards
    assert ledger.slot() == ahead


def dlmm_pairs(net: Localnet) -> list[Pubkey]:
    return [Pubkey.from_string(p.address) for p in net.pools if p.venue == "meteora"]


def test_dlmm_pairs_walk_in_bins_by_real_swaps_and_stay_near_their_price(
        tmp_path: Path) -> None:
    net = Localnet(tmp_path, profile="zero", drift_bps=30)
    net.open()
    seeded = {pool: net.ledger.dlmm_state(pool)[0] for pool in dlmm_pairs(net)}
    seen: dict[Pubkey, set[int]] = {pool: set() for pool in seeded}
    for _ in range(60):
        net.drift()
        for pool in seeded:
            seen[pool].add(net.ledger.dlmm_state(pool)[0].active_id)
    moved = {pool: net.ledger.dlmm_state(pool)[0] for pool in seeded}
    net.close()

    assert all(len(ids) > 1 for ids in seen.values()), seen  # every pair moved
    for pool, pair in moved.items():
        before = seeded[pool]
        # the bins it moved by were traded through: its reserves changed, and its price
        # stays within what a 30 bps walk reverting to the seeded price reaches
        reserves = [net.ledger.token_amount(k) for k in (pair.reserve_x, pair.reserve_y)]
        assert reserves != [None, None]
        assert abs(pair.active_id - before.active_id) * before.bin_step < 1_000

    again = Localnet(tmp_path, profile="zero", drift_bps=0)
    again.open()  # the walk's trades come back from the journal
    for pool, pair in moved.items():
        after = again.ledger.dlmm_state(pool)[0]
        assert (after.active_id, after.encode()) == (pair.active_id, pair.encode())
    again.close()


def test_fault_specs_parse_and_bad_ones_are_refused() -> None:
    import pytest

    from gateways.localnet.server import Faults

    faults = Faults.parse("drop_send_rate=0.05, http_429_rate=0.02,delay_ms=20",
                          Faults(delay_ms=5))
    assert (faults.drop_send_rate, faults.http_429_rate, faults.delay_ms) == (0.05, 0.02, 20)
    assert Faults.parse("") == Faults()
    for bad in ("drop_send_rate", "nope=1", "timeout_rate=2", "delay_ms=-1", "hang_s=x"):
        with pytest.raises(ValueError):
            Faults.parse(bad)


def test_a_dlmm_walk_replays_at_the_moment_it_traded_even_across_a_seconds_edge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every read of the clock is 0.6 s later than the one before, so a drift trade and its
    # journal entry always read different seconds (a loaded machine does this by chance).
    ticks = iter(range(10**6))
    monkeypatch.setattr("gateways.localnet.cluster.time.time",
                        lambda: 1_800_000_000 + 0.6 * next(ticks))
    net = Localnet(tmp_path, profile="zero", drift_bps=60)
    net.open()
    for _ in range(5):
        net.drift()
    moved = {pool: net.ledger.dlmm_state(pool)[0] for pool in dlmm_pairs(net)}
    net.close()

    again = Localnet(tmp_path, profile="zero", drift_bps=0)
    again.open()
    for pool, pair in moved.items():
        assert again.ledger.dlmm_state(pool)[0].encode() == pair.encode()
