"""The API's one error shape, `{"error": "..."}`, for every failure of REST and WebSocket."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.errors import (
    DexecError,
    IdempotencyConflict,
    InvalidInput,
    LimitExceeded,
    NotAuthenticated,
    NotCancellable,
    NotPermitted,
    OrderNotFound,
    Overloaded,
    RetryableError,
)

_STATUS_FOR: list[tuple[type[DexecError], int]] = [
    (NotAuthenticated, 401),
    (NotPermitted, 403),
    (LimitExceeded, 403),
    (OrderNotFound, 404),
    (IdempotencyConflict, 409),
    (NotCancellable, 409),
    (InvalidInput, 422),
    (Overloaded, 429),
    (RetryableError, 503),
]
_LOCATIONS = ("body", "query", "path", "header", "cookie")
_NOT_AN_OBJECT = {"model_type", "model_attributes_type", "dict_type"}
NOT_JSON = "body is not valid JSON"
# Browsers send forms and text/plain across sites without asking: a JSON API takes neither.
NOT_JSON_TYPE = "the order must be a JSON object sent with Content-Type: application/json"


def error_status(exc: DexecError) -> int:
    """Return the HTTP status of an error (400 for any other terminal error)."""
    for cls, status in _STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 400


def retry_after_s(exc: DexecError) -> int:
    return max(1, int(getattr(exc, "retry_after_s", 1)))


def error_frame(exc: DexecError) -> dict[str, Any]:
    """Return the WebSocket frame of an error: its message, HTTP status and Retry-After."""
    status = error_status(exc)
    frame: dict[str, Any] = {"type": "error", "error": exc.message, "status": status}
    if status in (429, 503):
        frame["retry_after"] = retry_after_s(exc)
    return frame


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Return one line naming each offending field and what is wrong with it."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        kind = err.get("type")
        if kind == "json_invalid" or (kind == "missing" and not loc):  # none, or not JSON
            parts.append(NOT_JSON)
            continue
        if not loc:  # the body as a whole
            if kind in _NOT_AN_OBJECT and isinstance(err.get("input"), bytes | bytearray):
                parts.append(NOT_JSON_TYPE)  # a body FastAPI did not read as JSON
            elif kind in _NOT_AN_OBJECT:
                parts.append("the order must be a JSON object")
            else:
                parts.append(str(err.get("msg")))
            continue
        # A union's members add their own location (amount.str, amount.int): name the
        # field the client sent.
        message = {"missing": "field required", "extra_forbidden": "unknown field"}.get(
            str(kind), str(err.get("msg")))
        parts.append(f"{loc[0]}: {message}")
    return "; ".join(dict.fromkeys(parts))


def _response(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _dexec_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DexecError)  # noqa: S101 - registered for DexecError
    status = error_status(exc)
    response = _response(status, exc.message,
                         retry_after_s(exc) if status in (429, 503) else None)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dexec"'
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it
    return _response(422, describe_validation_errors(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for it
    response = _response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # A bug: the client learns nothing about the internals. Starlette raises the exception
    # again once this answer is sent, so the server logs its traceback.
    return _response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` in the API's shape (a 500 too, without internals)."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(DexecError, _dexec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
