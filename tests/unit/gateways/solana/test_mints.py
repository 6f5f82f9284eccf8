"""A mint on no list is read from the chain (decimals), not refused; what is no mint is."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from core.errors import InvalidInput
from core.tokens import TokenRegistry
from gateways.solana.mints import MintLookup
from gateways.solana.rpc import SolanaRpc
from tests.kit.localnet import Cluster


async def test_an_unlisted_mint_is_learned_with_its_decimals(cluster: Cluster) -> None:
    new_mint = Keypair().pubkey()
    cluster.ledger.create_mint(new_mint, 5)
    tokens = TokenRegistry()
    rpc = SolanaRpc(cluster.url)
    try:
        lookup = MintLookup(rpc, tokens)
        wallet = str(cluster.wallet.pubkey())  # an account, but no mint
        absent = str(Keypair().pubkey())
        await lookup.ensure([str(new_mint), wallet, absent, "SOL", "not base58 at all"])
    finally:
        await rpc.close()
    learned = tokens.resolve(str(new_mint))
    assert (learned.mint, learned.decimals) == (str(new_mint), 5)
    assert tokens.by_mint(str(new_mint)) == learned
    for refused in (wallet, absent):
        with pytest.raises(InvalidInput, match="unknown token mint"):
            tokens.resolve(refused)
