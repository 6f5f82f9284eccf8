"""Wallet keys in the forms Solana users keep them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from core.errors import InvalidInput
from gateways.solana.wallet import load_keypair


def test_a_solana_keygen_file_a_json_array_and_base58_are_the_same_wallet(
        tmp_path: Path) -> None:
    wallet = Keypair()
    keygen_file = tmp_path / "id.json"
    keygen_file.write_text(json.dumps(list(bytes(wallet))))
    for form in (str(keygen_file), json.dumps(list(bytes(wallet))), str(wallet)):
        assert load_keypair(form).pubkey() == wallet.pubkey()


@pytest.mark.parametrize("bad", ["[1, 2, 3]", "not-a-key", "[" + ",".join(["300"] * 64) + "]"])
def test_a_bad_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        load_keypair(bad)
    assert bad not in str(refused.value)


def test_a_file_that_is_not_a_keypair_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    path.write_text("hello")
    with pytest.raises(InvalidInput, match="keypair file"):
        load_keypair(str(path))
