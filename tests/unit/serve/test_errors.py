"""Unit tests for the API's error shape: statuses, WebSocket frames, validation messages, and
the handlers on a small FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.errors import (
    BlockhashExpired,
    DexecError,
    IdempotencyConflict,
    IllegalTransition,
    InsufficientFunds,
    InvalidInput,
    LeaseLost,
    NoRoute,
    OrderNotFound,
    Overloaded,
    RateLimited,
    RetryableError,
    SlippageExceeded,
    TerminalError,
    TransientDatabaseError,
    VenueTimeout,
    VenueUnavailable,
    WorkerLost,
)
from serve.errors import (
    describe_validation_errors,
    error_frame,
    error_status,
    install_error_handlers,
)
from serve.models import OrderRequest

# --- statuses and frames ------------------------------------------------------------------------


# The errors of each status, grouped: every retryable one answers 503, every other terminal
# one 400.
FAMILIES: dict[int, list[DexecError]] = {
    404: [OrderNotFound("no order 42")],
    409: [IdempotencyConflict("client_order_id reused")],
    422: [InvalidInput("amount: too small")],
    429: [Overloaded("too many open orders", retry_after_s=3.0)],
    503: [RetryableError("try again"), VenueUnavailable("raydium is down", venue="raydium"),
          VenueTimeout("timed out"), RateLimited("slow down"), NoRoute("no venue quoted"),
          BlockhashExpired("expired"), TransientDatabaseError("database unavailable"),
          LeaseLost("lease lost"), WorkerLost("worker died")],
    400: [SlippageExceeded("price moved"), InsufficientFunds("not enough SOL"),
          IllegalTransition("confirmed -> routing"), TerminalError("no"), DexecError("plain")],
}


@pytest.mark.parametrize(("error", "status"),
                         [(error, status) for status, errors in FAMILIES.items()
                          for error in errors])
def test_each_error_family_has_its_status(error: DexecError, status: int) -> None:
    assert error_status(error) == status


def test_an_overloaded_frame_carries_its_retry_after() -> None:
    frame = error_frame(Overloaded("too many open orders", retry_after_s=7.9))
    assert frame == {"type": "error", "error": "too many open orders", "status": 429,
                     "retry_after": 7}


def test_retry_after_is_at_least_one_second() -> None:
    assert error_frame(Overloaded("busy", retry_after_s=0.2))["retry_after"] == 1
    assert error_frame(VenueUnavailable("raydium is down")) == {
        "type": "error", "error": "raydium is down", "status": 503, "retry_after": 1}


@pytest.mark.parametrize("error", [OrderNotFound("no order 42"), InvalidInput("bad"),
                                   IdempotencyConflict("reused"), SlippageExceeded("moved")])
def test_a_frame_for_an_error_not_worth_retrying_has_no_retry_after(error: DexecError) -> None:
    frame = error_frame(error)
    assert frame == {"type": "error", "error": error.message, "status": error_status(error)}


# --- validation messages ------------------------------------------------------------------------


def pydantic_errors(body: Any = None, *, raw: bytes | None = None) -> list[dict[str, Any]]:
    """Validate like serve.models does (no location prefix); return pydantic's errors."""
    try:
        if raw is not None:
            OrderRequest.model_validate_json(raw)
        else:
            OrderRequest.model_validate(body)
    except ValidationError as exc:
        return [dict(e) for e in exc.errors(include_url=False)]
    raise AssertionError("the body was valid")


def fastapi_errors(errors: list[dict[str, Any]], where: str = "body") -> list[dict[str, Any]]:
    """Return the errors as FastAPI reports them: each location under `where`."""
    return [{**e, "loc": (where, *e["loc"])} for e in errors]


VALID = {"type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "1.5"}


def test_invalid_json_is_named_once() -> None:
    assert describe_validation_errors(pydantic_errors(raw=b"{nope")) == "body is not valid JSON"
    # FastAPI's own decoder: the location ends with the offset of the error.
    recorded = [{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error",
                 "input": {}, "ctx": {"error": "Expecting property name enclosed in quotes"}}]
    assert describe_validation_errors(recorded) == "body is not valid JSON"


@pytest.mark.parametrize("body", [[1, 2], "an order", 42, None])
def test_a_body_that_is_not_an_object_is_named_as_such(body: Any) -> None:
    errors = pydantic_errors(body)
    expected = "the order must be a JSON object"
    assert describe_validation_errors(errors) == expected
    assert describe_validation_errors(fastapi_errors(errors)) == expected


def test_an_empty_body_through_fastapi_is_not_valid_json() -> None:
    # As when the route decoded the body itself: no bytes are no JSON document.
    recorded = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    assert describe_validation_errors(recorded) == "body is not valid JSON"
    # Bytes reach validation when FastAPI did not read the body as JSON (its content type).
    recorded = [{"type": "model_attributes_type", "loc": ("body",), "input": b"{not json",
                 "msg": "Input should be a valid dictionary or object to extract fields from"}]
    assert describe_validation_errors(recorded) == (
        "the order must be a JSON object sent with Content-Type: application/json")


def test_a_whole_body_error_of_another_kind_keeps_its_message() -> None:
    recorded = [{"type": "value_error", "loc": ("body",), "msg": "Value error, odd order"}]
    assert describe_validation_errors(recorded) == "Value error, odd order"


def test_missing_fields_are_named_in_order() -> None:
    errors = pydantic_errors({"type": "market"})
    expected = "input_mint: field required; output_mint: field required; amount: field required"
    assert describe_validation_errors(errors) == expected
    assert describe_validation_errors(fastapi_errors(errors)) == expected


def test_an_unknown_field_is_named() -> None:
    errors = pydantic_errors({**VALID, "venue": "raydium"})
    assert describe_validation_errors(errors) == "venue: unknown field"
    assert describe_validation_errors(fastapi_errors(errors)) == "venue: unknown field"


def test_a_unions_members_are_reported_under_the_field_the_client_sent() -> None:
    errors = pydantic_errors({**VALID, "amount": [1]})
    assert {e["loc"][:2] for e in errors} >= {("amount", "str"), ("amount", "int")}  # real shape
    message = describe_validation_errors(fastapi_errors(errors))
    parts = message.split("; ")
    assert len(parts) == len(errors)
    assert all(p.startswith("amount: ") for p in parts), message
    assert "Input should be a valid string" in message
    for member in ("str", "int", "float", "decimal", "body"):
        assert f"{member}:" not in message and f".{member}" not in message


def test_other_field_errors_keep_pydantics_message() -> None:
    errors = pydantic_errors({**VALID, "type": "twap", "slippage_bps": 10_000})
    assert describe_validation_errors(errors) == (
        "type: Input should be 'market', 'limit' or 'stop'; "
        "slippage_bps: Input should be less than or equal to 5000")


def test_a_query_parameters_location_is_stripped() -> None:
    recorded = [{"type": "greater_than_equal", "loc": ("query", "limit"),
                 "msg": "Input should be greater than or equal to 1", "input": "0",
                 "ctx": {"ge": 1}}]
    assert describe_validation_errors(recorded) == (
        "limit: Input should be greater than or equal to 1")


def test_repeated_problems_are_named_once() -> None:
    missing = {"type": "missing", "loc": ("body", "amount"), "msg": "Field required"}
    extra = {"type": "extra_forbidden", "loc": ("body", "venue"), "msg": "Extra inputs"}
    also_missing = {**missing, "loc": ("body", "amount", "str")}
    assert describe_validation_errors([missing, extra, also_missing, extra]) == (
        "amount: field required; venue: unknown field")


# --- the handlers on an app ---------------------------------------------------------------------

RAISED: dict[str, DexecError] = {
    "overloaded": Overloaded("too many open orders", retry_after_s=4.5),
    "unavailable": VenueUnavailable("raydium is down", venue="raydium"),
    "missing": OrderNotFound("no order 42"),
    "conflict": IdempotencyConflict("client_order_id reused for a different order"),
    "invalid": InvalidInput("amount: too small"),
    "slipped": SlippageExceeded("price moved"),
}


def error_app() -> FastAPI:
    """Return a small app with the error handlers: routes that raise, and two that validate."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise RAISED[name]

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret detail")

    @app.get("/orders")
    async def list_orders(limit: Annotated[int, Query(ge=1, le=100)] = 50) -> dict[str, int]:
        return {"limit": limit}

    @app.post("/orders")
    async def submit(order: OrderRequest) -> dict[str, str]:
        return {"type": order.type}

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(error_app()) as test_client:
        yield test_client


@pytest.mark.parametrize(("name", "status", "retry_after"), [
    ("overloaded", 429, "4"),
    ("unavailable", 503, "1"),
    ("missing", 404, None),
    ("conflict", 409, None),
    ("invalid", 422, None),
    ("slipped", 400, None),
])
def test_a_dexec_error_answers_its_status_and_message(
        client: TestClient, name: str, status: int, retry_after: str | None) -> None:
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.json() == {"error": RAISED[name].message}
    assert response.headers.get("retry-after") == retry_after


def test_an_unexpected_error_answers_500_without_its_details() -> None:
    # As a server does: the exception is answered, not raised into the test.
    with TestClient(error_app(), raise_server_exceptions=False) as client:
        response = client.get("/bug")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "secret detail" not in response.text


def test_an_unknown_path_answers_in_the_apis_shape(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_a_wrong_method_answers_in_the_apis_shape_and_keeps_allow(client: TestClient) -> None:
    response = client.delete("/orders")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert "GET" in response.headers["allow"]  # Starlette names the first route's methods


def test_a_bad_query_parameter_names_it(client: TestClient) -> None:
    response = client.get("/orders", params={"limit": 0})
    assert response.status_code == 422
    assert response.json() == {"error": "limit: Input should be greater than or equal to 1"}
    response = client.get("/orders", params={"limit": "ten"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("limit: Input should be a valid integer")
    assert client.get("/orders", params={"limit": 7}).json() == {"limit": 7}


def test_a_bad_body_names_every_problem(client: TestClient) -> None:
    response = client.post("/orders", json={"type": "market", "venue": "raydium"})
    assert response.status_code == 422
    assert response.json() == {"error": "input_mint: field required; output_mint: field "
                                        "required; amount: field required; venue: unknown field"}
    response = client.post("/orders", content=b"{nope",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"error": "body is not valid JSON"}
    response = client.post("/orders", json=[VALID])
    assert response.json() == {"error": "the order must be a JSON object"}
