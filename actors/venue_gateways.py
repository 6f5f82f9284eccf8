"""Build this process's venue gateways from settings (inside an actor or an ingress replica)."""

from __future__ import annotations

import logging
from typing import Any

from actors.metrics import RayVenueMetrics
from actors.shell import rpc_endpoint, this_node, wallet_secret
from actors.simulated_chain import RayChainClient
from actors.telemetry import BatchStats
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.base import VenueGateway
from gateways.meteora.pools import MeteoraPairs
from gateways.raydium.venue import RaydiumTradeVenue
from gateways.simulated.chain import dev_wallet
from gateways.simulated.venue import SimulatedVenue
from gateways.solana.programs import DlmmProgram
from gateways.solana.rpc import SolanaRpc
from gateways.solana.venue import ChainVenue, SolanaVenue
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
    """Gateways on a Solana cluster, one RPC client for the process: Raydium through its
    Trade API, Meteora DLMM from its pool API and the pairs' accounts. The same code on
    every network; on localnet the APIs are the local cluster's."""
    url = rpc_endpoint(settings)
    rpc = SolanaRpc(url, timeout_s=settings.quote_timeout_s)
    wallet = load_keypair(secret) if signing and (secret := wallet_secret(settings)) else None
    metrics = RayVenueMetrics()
    gateways: list[VenueGateway] = []
    for venue in settings.venues:
        if venue == "raydium":
            trade, api = settings.venue_url("raydium_trade", url), settings.venue_url(
                "raydium_api", url)
            if trade and api:
                gateways.append(RaydiumTradeVenue(
                    rpc, wallet, trade_url=trade, api_url=api,
                    tx_version=settings.raydium_tx_version,
                    priority_level=settings.priority_fee_level,
                    priority_cap_micro_lamports=settings.priority_fee_cap_micro_lamports,
                    timeout_s=settings.quote_timeout_s,
                    rate_limit_per_s=settings.venue_rate_limit_per_s, metrics=metrics))
                continue
        elif venue == "meteora":
            api = settings.venue_url("meteora_api", url)
            if api:
                pairs = MeteoraPairs(api, settings.meteora_pairs)
                gateways.append(ChainVenue(
                    venue, DlmmProgram(), rpc, pairs, wallet,
                    rate_limit_per_s=settings.venue_rate_limit_per_s, metrics=metrics,
                    priority_micro_lamports=settings.priority_fee_micro_lamports))
                continue
        log.warning("venue %s has no API on %s: set its URL to trade there", venue,
                    settings.network)
    return gateways


def chain_rpc(settings: Settings, gateways: list[VenueGateway]) -> SolanaRpc | None:
    """The Solana RPC client the gateways already hold (one per process), or a new one
    when no venue is configured; None on the simulated chain."""
    if settings.network == "sim":
        return None
    for gateway in gateways:
        if isinstance(gateway, SolanaVenue):
            return gateway.rpc
    return SolanaRpc(rpc_endpoint(settings), timeout_s=settings.quote_timeout_s)


def simulated_gateways(settings: Settings, chain: Any, stats: BatchStats | None = None, *,
                       signing: bool = True) -> list[VenueGateway]:
    """Return a gateway for every configured venue, over the chain actor's handle `chain`.

    Gateways run in-process, as concurrent asyncio tasks: they hold no order state, and a
    call costs no actor hop of its own. Each has its own rate limit
    (`venue_rate_limit_per_s` holds per process). They share one client of the simulated
    chain, so their calls travel together.
    """
    client = RayChainClient(chain, settings.batch_window_s, stats,
                            node_id=this_node() if settings.sim_wire else None)
    wallet = dev_wallet(wallet_secret(settings)) if signing else None
    tokens = TokenRegistry.for_network(settings.network)
    metrics = RayVenueMetrics()
    return [
        SimulatedVenue(v, client, wallet, tokens, rate_limit_per_s=settings.venue_rate_limit_per_s,
                       metrics=metrics)
        for v in settings.venues
    ]
