"""Build this process's venue gateways from settings (inside an actor or an ingress replica)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from solders.pubkey import Pubkey

from actors.metrics import RayVenueMetrics
from actors.shell import rpc_endpoint, wallet_secret
from actors.simulated_chain import RayChainClient
from actors.telemetry import BatchStats
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.base import VenueGateway
from gateways.simulated.chain import dev_wallet
from gateways.simulated.venue import SimulatedVenue
from gateways.solana.programs import CpmmProgram, DlmmProgram
from gateways.solana.rpc import SolanaRpc
from gateways.solana.venue import ChainVenue, Pool, PoolProgram
from gateways.solana.wallet import load_keypair

log = logging.getLogger(__name__)


def venue_gateways(settings: Settings, chain: Any, stats: BatchStats | None = None, *,
                   signing: bool = True) -> list[VenueGateway]:
    """Return a gateway for every configured venue: on the simulated chain (the chain actor's
    handle `chain`) or, on any other network, on a Solana cluster over JSON-RPC."""
    if settings.network != "sim":
        return chain_gateways(settings, signing=signing)
    return simulated_gateways(settings, chain, stats, signing=signing)


def chain_gateways(settings: Settings, *, signing: bool) -> list[VenueGateway]:
    """Gateways on a Solana cluster: one RPC client for the process, one venue per program.

    The pools come from the local cluster's directory (`/localnet/pools`); a live network's
    pool APIs are the live venues' work (issue 14).
    """
    url = rpc_endpoint(settings)
    rpc = SolanaRpc(url, timeout_s=settings.quote_timeout_s)
    listed: list[dict[str, str]] = []
    if settings.network == "localnet":  # never trust a live RPC provider for pools
        listed = httpx.get(f"{url}/localnet/pools", timeout=10.0
                           ).json()["pools"]
    else:
        log.warning("no pool discovery on %s yet (live venues): no venue can quote",
                    settings.network)
    wallet = load_keypair(secret) if signing and (secret := wallet_secret(settings)) else None
    metrics = RayVenueMetrics()
    programs: dict[str, PoolProgram] = {"raydium": CpmmProgram(), "meteora": DlmmProgram()}
    gateways: list[VenueGateway] = []
    for venue in settings.venues:
        pools = [Pool(Pubkey.from_string(p["address"]), Pubkey.from_string(p["mint_x"]),
                      Pubkey.from_string(p["mint_y"])) for p in listed if p["venue"] == venue]
        if venue in programs and pools:
            gateways.append(ChainVenue(venue, programs[venue], rpc, pools, wallet,
                                       rate_limit_per_s=settings.venue_rate_limit_per_s,
                                       metrics=metrics))
    return gateways


def simulated_gateways(settings: Settings, chain: Any, stats: BatchStats | None = None, *,
                       signing: bool = True) -> list[VenueGateway]:
    """Return a gateway for every configured venue, over the chain actor's handle `chain`.

    Gateways run in-process, as concurrent asyncio tasks: they hold no order state, and a
    call costs no actor hop of its own. Each has its own rate limit
    (`venue_rate_limit_per_s` holds per process). They share one client of the simulated
    chain, so their calls travel together.
    """
    client = RayChainClient(chain, settings.batch_window_s, stats)
    wallet = dev_wallet(wallet_secret(settings)) if signing else None
    tokens = TokenRegistry()
    metrics = RayVenueMetrics()
    return [
        SimulatedVenue(v, client, wallet, tokens, rate_limit_per_s=settings.venue_rate_limit_per_s,
                       metrics=metrics)
        for v in settings.venues
    ]
