"""Unit tests for reading a key from a request and resolving it, with a short cache."""

from __future__ import annotations

import base64

import pytest

from core.accounts import Principal, Scope, hash_secret, new_key, parse_key
from core.errors import NotAuthenticated
from serve.auth import Authenticator, key_from_header
from tests.kit.clock import FakeClock

ALICE = Principal("alice", Scope.TRADE, "abc")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("header", "key"), [
    ("Bearer k1", "k1"), ("bearer  k1 ", "k1"), (basic("dexec", "k2"), "k2"),
    (basic("k3", ""), "k3"), (None, None), ("", None), ("Bearer ", None),
    ("Token k4", None), ("Basic not-base64!", None),
])
def test_the_key_comes_from_bearer_or_basic(header: str | None, key: str | None) -> None:
    assert key_from_header(header) == key


def test_a_new_key_parses_back_and_only_its_hash_is_kept() -> None:
    key = new_key()
    parsed = parse_key(key.token)
    assert parsed is not None and parsed[0] == key.key_id
    assert hash_secret(parsed[1]) == key.secret_hash and parsed[1] not in key.secret_hash
    assert parse_key(key.token + "x") is None and parse_key("dxk_short_x") is None


async def test_answers_are_cached_for_the_ttl_then_asked_again() -> None:
    clock = FakeClock()
    answers: dict[str, Principal | None] = {"good": ALICE}
    asked: list[str] = []

    async def lookup(key: str) -> Principal | None:
        asked.append(key)
        return answers.get(key)

    auth = Authenticator(lookup, ttl_s=5.0, clock=clock)
    assert await auth.principal("good") == ALICE
    answers["good"] = None  # revoked
    assert await auth.principal("good") == ALICE  # within the ttl
    clock.advance(5.0)
    with pytest.raises(NotAuthenticated, match="not valid"):
        await auth.principal("good")
    with pytest.raises(NotAuthenticated, match="not valid"):
        await auth.principal("unknown")
    with pytest.raises(NotAuthenticated, match="unknown"):  # negative answers are cached too
        await auth.principal("unknown")
    assert asked == ["good", "good", "unknown"]


async def test_no_key_is_refused_with_how_to_get_one() -> None:
    async def lookup(key: str) -> Principal | None:
        raise AssertionError("no lookup without a key")

    with pytest.raises(NotAuthenticated, match="Authorization: Bearer"):
        await Authenticator(lookup).principal(None)
