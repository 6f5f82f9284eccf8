"""The CLI's order bodies: what `dexec submit` sends for each kind of order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dexec.cli import _order_body, build_parser


def body(*argv: str) -> dict[str, object]:
    return _order_body(build_parser().parse_args(["submit", "SOL", "USDC", "1.5", *argv]))


def test_a_plain_submit_is_a_market_order() -> None:
    assert body() == {"type": "market", "input_mint": "SOL", "output_mint": "USDC",
                      "amount": "1.5", "slippage_bps": 50}


def test_limit_stop_and_stop_limit() -> None:
    assert body("--limit", "151")["type"] == "limit"
    assert body("--limit", "151")["limit_price"] == "151"
    stop = body("--stop", "140")
    assert stop["type"] == "stop" and stop["trigger_price"] == "140"
    assert "limit_price" not in stop
    stop_limit = body("--stop", "140", "--limit", "139")
    assert stop_limit["type"] == "stop"
    assert (stop_limit["trigger_price"], stop_limit["limit_price"]) == ("140", "139")


def test_time_in_force_and_expiry() -> None:
    assert body("--limit", "151", "--tif", "ioc")["time_in_force"] == "ioc"
    before = datetime.now(UTC)
    gtt = body("--limit", "151", "--expires-in", "60")
    assert gtt["time_in_force"] == "gtt"
    expires = datetime.fromisoformat(str(gtt["expires_at"]))
    assert before + timedelta(seconds=59) < expires < datetime.now(UTC) + timedelta(seconds=61)


def test_cancel_takes_an_order_id() -> None:
    args = build_parser().parse_args(["cancel", "abc"])
    assert (args.command, args.order_id) == ("cancel", "abc")
