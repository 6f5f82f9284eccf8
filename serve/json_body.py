"""JSON bodies and frames with exact numbers: amounts never pass through a float."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def decode_json(raw: bytes | str) -> Any:
    """Decode JSON with every number as an exact Decimal (amounts are never floats).

    Raises json.JSONDecodeError for anything that is not JSON, bytes that are not UTF-8
    included (FastAPI answers that as a validation error, like any other bad JSON).
    """
    try:
        return json.loads(raw, parse_float=Decimal)
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8: {exc.reason}", "", 0) from None
    except RecursionError:  # nested deeper than Python's stack: refused, like any bad JSON
        raise json.JSONDecodeError("nested too deeply", "", 0) from None


class DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class DecimalJSONRoute(APIRoute):
    """A route whose JSON body keeps its numbers exact (FastAPI's "custom Request" recipe)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return exact
