"""Unit tests for the rows of batched statements: one JSON parameter, values kept exact."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from storage.database import rows_from, rows_param


def test_rows_travel_as_one_json_parameter_with_exact_values() -> None:
    at = datetime(2026, 11, 25, 17, 0, 1, 123456, tzinfo=UTC)
    order_id = uuid.uuid4()
    rows = [[order_id, 2**70 + 1, Decimal("1.000000001"), at, bytes(range(256)), None, True]]
    decoded = json.loads(rows_param(rows))
    assert decoded == [[str(order_id), 2**70 + 1, "1.000000001", at.isoformat(),
                        "\\x" + bytes(range(256)).hex(), None, True]]
    with pytest.raises(TypeError):
        rows_param([[object()]])
    sql = rows_from((("order_id", "uuid"), ("amount", "numeric")), "v")
    assert sql == ("(SELECT (r->>0)::uuid AS order_id, (r->>1)::numeric AS amount"
                   " FROM jsonb_array_elements(%s::jsonb) AS j(r)) AS v")
