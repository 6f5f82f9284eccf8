"""Build this process's venue gateways from settings (inside an actor or an ingress replica)."""

from __future__ import annotations

from typing import Any

from actors.metrics import RayVenueMetrics
from actors.shell import wallet_secret
from actors.simulated_chain import RayChainClient
from actors.telemetry import BatchStats
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.base import VenueGateway
from gateways.simulated.chain import dev_wallet
from gateways.simulated.venue import SimulatedVenue


def venue_gateways(settings: Settings, chain: Any, stats: BatchStats | None = None, *,
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
