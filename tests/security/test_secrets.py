"""Files holding secrets are private from their first byte; test hooks are off by default."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from actors.bootstrap import resolve_wallet, seal_secrets, write_private
from actors.shell import database_url, require_test_hooks, rpc_endpoint, wallet_secret
from core.errors import NotPermitted
from core.settings import Settings


def test_the_dev_wallet_is_created_0600_and_reused(tmp_path: Path) -> None:
    first = resolve_wallet(Settings(data_dir=tmp_path))
    path = tmp_path / "dev-wallet.json"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.wallet_keypair is not None
    assert json.loads(path.read_text())["secret"] == first.wallet_keypair.get_secret_value()
    again = resolve_wallet(Settings(data_dir=tmp_path))
    assert again.wallet_keypair == first.wallet_keypair


def test_write_private_never_exposes_the_file_and_never_overwrites(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not widen the mode
    try:
        write_private(tmp_path / "secret", "s3cret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "secret", "other")
    assert (tmp_path / "secret").read_text() == "s3cret"


def test_test_hooks_are_refused_unless_the_stack_turned_them_on() -> None:
    with pytest.raises(NotPermitted, match="DEXEC_TEST_HOOKS"):
        require_test_hooks(Settings(), "arm_crash")
    require_test_hooks(Settings(test_hooks=True), "arm_crash")  # the suite's engine


def test_actors_get_settings_without_secrets_and_read_them_from_a_private_file(
        tmp_path: Path) -> None:
    full = Settings(data_dir=tmp_path, database_url=SecretStr("postgresql://u:pw@db/x"),
                    wallet_keypair=SecretStr("base58-secret"), network="devnet",
                    rpc_url=SecretStr("https://rpc.example/?api-key=k3y"))

    sealed = seal_secrets(full)

    assert sealed.database_url is None and sealed.wallet_keypair is None
    assert "pw@db" not in sealed.model_dump_json() and "base58" not in sealed.model_dump_json()
    assert sealed.secrets_file is not None
    assert stat.S_IMODE(sealed.secrets_file.stat().st_mode) == 0o600
    assert database_url(sealed) == "postgresql://u:pw@db/x"
    assert wallet_secret(sealed) == "base58-secret"
    # An RPC provider's URL carries its API key: it is a secret too.
    assert sealed.rpc_url is None and "k3y" not in sealed.model_dump_json()
    assert rpc_endpoint(sealed) == "https://rpc.example/?api-key=k3y"
    again = seal_secrets(full)  # a restart replaces the file
    assert again.secrets_file == sealed.secrets_file
    assert list(tmp_path.glob(".secrets.json.*")) == []


@pytest.mark.parametrize("network", ["devnet", "mainnet-beta"])
def test_a_live_network_never_trades_from_the_dev_wallet(tmp_path: Path, network: str) -> None:
    from dexec.launch import _resolve_chain

    with pytest.raises(RuntimeError, match="needs DEXEC_WALLET_KEYPAIR"):
        _resolve_chain(Settings(data_dir=tmp_path, network=network))  # type: ignore[arg-type]
    assert not (tmp_path / "dev-wallet.json").exists()
