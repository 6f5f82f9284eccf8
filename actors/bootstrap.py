"""Resolve what the actors need before they start: the database and the wallet."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from pydantic import SecretStr
from solders.keypair import Keypair

from core.settings import Settings
from storage.embedded import EmbeddedPostgres
from storage.migrate import apply_migrations


def resolve_database(settings: Settings) -> tuple[Settings, EmbeddedPostgres | None]:
    """Start the embedded PostgreSQL when no DEXEC_DATABASE_URL is set; apply migrations."""
    embedded = None
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        settings = settings.model_copy(update={"database_url": SecretStr(embedded.start())})
    if settings.database_url is None:  # pragma: no cover - set just above
        raise RuntimeError("no database")
    asyncio.run(apply_migrations(settings.database_url.get_secret_value()))
    return settings, embedded


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only, from its first byte (never 0644 first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def resolve_wallet(settings: Settings) -> Settings:
    """Use the configured wallet, or a dev wallet kept in the data folder (it holds no value)."""
    if settings.wallet_keypair is not None:
        return settings
    path = Path(settings.data_dir) / "dev-wallet.json"
    if path.exists():
        secret = json.loads(path.read_text())["secret"]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = str(Keypair())
        write_private(path, json.dumps({"secret": secret, "note": "simulated chain only"}))
    return settings.model_copy(update={"wallet_keypair": SecretStr(secret)})
