"""Contract tests: the venues' answers in their documented shapes (fixtures written from
../shared/reference/dex-apis.md, success and error) parse with the gateways' typed models, and
the local cluster's venue servers answer in the same shapes, key for key, so the fake cannot
drift from what the live APIs send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair

from core.errors import VenueRefused
from gateways.localnet.cluster import MINTS, Localnet
from gateways.meteora.models import parse_pair, parse_pairs
from gateways.meteora.pools import best_pairs
from gateways.raydium.models import (
    parse_auto_fee,
    parse_compute,
    parse_transactions,
)
from tests.kit.localnet import serving

FIXTURES = Path(__file__).parent / "fixtures"
SOL, USDC = str(MINTS["SOL"]), str(MINTS["USDC"])


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def shape(value: Any) -> Any:
    """The keys of every object, recursively (a list by its first item), and value kinds."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def test_the_recorded_shapes_parse() -> None:
    compute = parse_compute(fixture("raydium_compute_ok"))
    assert (compute.input_amount, compute.output_amount, compute.other_amount_threshold) == (
        1_000_000_000, 149_211_037, 148_464_981)
    assert compute.route_plan[0].fee_rate == 25 and compute.slippage_bps == 50
    assert compute.envelope == fixture("raydium_compute_ok")  # sent back whole to build
    assert parse_transactions(fixture("raydium_transaction_list")) == parse_transactions(
        fixture("raydium_transaction_object"))
    assert parse_auto_fee(fixture("raydium_auto_fee")) == {"vh": 120_000, "h": 50_000,
                                                            "m": 10_000}
    pairs = parse_pairs(fixture("meteora_pair_all"))
    assert parse_pair(fixture("meteora_pair")) == pairs[0]
    (best,) = best_pairs(pairs)  # the more liquid one is hidden: never routed to
    assert str(best.address) == fixture("meteora_pair")["address"]


@pytest.mark.parametrize("name", ["raydium_compute_error", "raydium_transaction_error"])
def test_the_recorded_refusals_are_the_venue_s_reason(name: str) -> None:
    parse = parse_compute if "compute" in name else parse_transactions
    with pytest.raises(VenueRefused, match=fixture(name)["msg"]):
        parse(fixture(name))


@pytest.mark.parametrize("body", [
    [], {"success": True}, {"success": True, "data": {"inputMint": SOL}},
    {"success": True, "data": [{"transaction": "%%%"}]}, "oops",
])
def test_a_body_in_another_shape_is_a_value_error(body: Any) -> None:
    for parse in (parse_compute, parse_transactions, parse_auto_fee):
        with pytest.raises(ValueError):
            parse(body)


@pytest.fixture
async def local() -> AsyncIterator[httpx.AsyncClient]:
    net = Localnet(None, profile="zero", drift_bps=0)
    async with serving(net.app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_the_local_servers_answer_in_the_recorded_shapes(
        local: httpx.AsyncClient) -> None:
    compute = (await local.get("/raydium/trade/compute/swap-base-in", params={
        "inputMint": SOL, "outputMint": USDC, "amount": "1000000000", "slippageBps": "50",
        "txVersion": "V0"})).json()
    assert shape(compute) == shape(fixture("raydium_compute_ok"))
    parse_compute(compute)
    refused = (await local.get("/raydium/trade/compute/swap-base-in", params={
        "inputMint": SOL, "outputMint": str(Keypair().pubkey()), "amount": "1"})).json()
    assert shape(refused) == shape(fixture("raydium_compute_error"))

    built = (await local.post("/raydium/trade/transaction/swap-base-in", json={
        "wallet": str(Keypair().pubkey()), "swapResponse": compute, "txVersion": "V0",
        "computeUnitPriceMicroLamports": "1000", "wrapSol": True, "unwrapSol": False})).json()
    assert shape(built) == shape(fixture("raydium_transaction_list"))
    assert len(parse_transactions(built)) == 1
    bad = (await local.post("/raydium/trade/transaction/swap-base-in",
                            json={"wallet": "x", "swapResponse": {}})).json()
    assert shape(bad) == shape(fixture("raydium_transaction_error"))

    fee = (await local.get("/raydium/api/main/auto-fee")).json()
    assert shape(fee) == shape(fixture("raydium_auto_fee"))

    pairs = (await local.get("/meteora/pair/all")).json()
    assert [shape(p) for p in pairs] == [shape(fixture("meteora_pair"))] * 5
    one = (await local.get(f"/meteora/pair/{pairs[0]['address']}")).json()
    assert one == pairs[0] and parse_pair(one).bin_step > 0
    assert (await local.get(f"/meteora/pair/{Keypair().pubkey()}")).status_code == 404
