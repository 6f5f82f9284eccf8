"""The solana gateway tests' shared fixtures: a seeded local cluster on loopback (`cluster`),
and the `dexec localnet` cluster with both venues as the engine reaches them (`world`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from gateways.base import VenueGateway
from gateways.localnet.cluster import MINTS, Localnet
from gateways.meteora.pools import MeteoraPairs
from gateways.raydium.venue import RaydiumTradeVenue
from gateways.solana.programs import DlmmProgram
from gateways.solana.rpc import SolanaRpc
from gateways.solana.venue import ChainVenue
from tests.kit.localnet import Cluster, local_cluster, serving


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with local_cluster() as c:
        yield c


@dataclass
class World:
    net: Localnet
    wallet: Keypair
    venues: dict[str, VenueGateway]
    url: str
    rpc: SolanaRpc

    def lamports(self) -> int:
        return self.net.ledger.balance(self.wallet.pubkey())

    def tokens(self, mint: str) -> int:
        ata = get_associated_token_address(self.wallet.pubkey(), Pubkey.from_string(mint))
        return self.net.ledger.token_amount(ata) or 0


@pytest.fixture
async def world() -> AsyncIterator[World]:
    net = Localnet(None, profile="zero", drift_bps=0, test_hooks=True)
    wallet = Keypair()
    net.airdrop(wallet.pubkey(), 5_000 * 10**9)
    net.fund(wallet.pubkey(), MINTS["USDC"], 10_000 * 10**6)
    async with serving(net.app()) as url:
        rpc = SolanaRpc(url, timeout_s=2.0)
        venues: dict[str, VenueGateway] = {
            "raydium": RaydiumTradeVenue(rpc, wallet, trade_url=f"{url}/raydium/trade",
                                         api_url=f"{url}/raydium/api"),
            "meteora": ChainVenue("meteora", DlmmProgram(), rpc,
                                  MeteoraPairs(f"{url}/meteora"), wallet)}
        yield World(net, wallet, venues, url, rpc)
        await rpc.close()
