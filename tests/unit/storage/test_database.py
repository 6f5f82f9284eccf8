"""Unit tests for batched statements: rows as one JSON parameter with exact values, and a bad
item answered on its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.errors import DexecError, InvalidInput
from storage.database import each_on_its_own, rows_from, rows_param


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


# --- each_on_its_own: one bad item never fails the batch ----------------------------------


class Statement:
    """A batched statement that fails as a whole when any item is 'bad' (as PostgreSQL does)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, items: Sequence[str]) -> list[str | DexecError]:
        self.calls.append(list(items))
        if "bad" in items:
            raise InvalidInput("a value is out of range")
        return [item.upper() for item in items]


async def test_a_batch_without_a_bad_item_is_one_statement() -> None:
    statement = Statement()
    assert await each_on_its_own(statement, ["a", "b"]) == ["A", "B"]
    assert statement.calls == [["a", "b"]]


async def test_a_bad_item_is_its_own_answer_and_the_others_go_through() -> None:
    statement = Statement()

    answers = await each_on_its_own(statement, ["a", "bad", "c"])

    assert answers[0] == "A" and answers[2] == "C"
    assert isinstance(answers[1], InvalidInput)
    assert statement.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_a_lone_bad_item_raises_its_error() -> None:
    with pytest.raises(InvalidInput):
        await each_on_its_own(Statement(), ["bad"])
