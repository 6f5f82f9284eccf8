"""Resolve what the stack needs before it starts: the database, the wallet, a dev API key."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from pydantic import SecretStr
from solders.keypair import Keypair

from core.accounts import Scope
from core.settings import LOOPBACK, Settings
from gateways.solana.wallet import load_keypair
from storage.database import Database
from storage.embedded import EmbeddedPostgres
from storage.keys import KeyStore
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


SECRETS_FILE = "secrets.json"


def seal_secrets(settings: Settings) -> Settings:
    """Return the settings actors and replicas get: without the database URL or wallet key.

    Both go to `<data_dir>/secrets.json` (0600, replaced atomically); actors read them from
    there (actors.shell), so Ray never stores a secret with an actor's constructor arguments.
    """
    secrets = {name: value.get_secret_value() for name, value in
               (("database_url", settings.database_url),
                ("wallet_keypair", settings.wallet_keypair),
                ("rpc_url", settings.rpc_url)) if value is not None}
    path = (Path(settings.data_dir) / SECRETS_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    fresh.unlink(missing_ok=True)
    write_private(fresh, json.dumps(secrets))
    fresh.replace(path)
    return settings.model_copy(update={"database_url": None, "wallet_keypair": None,
                                       "rpc_url": None, "secrets_file": path})


def resolve_wallet(settings: Settings) -> Settings:
    """Use the configured wallet, or a dev wallet kept in the data folder (it holds no value)."""
    if settings.wallet_keypair is not None:
        # A solana-keygen file, its JSON array or base58: the actors get base58.
        wallet = load_keypair(settings.wallet_keypair.get_secret_value())
        return settings.model_copy(update={"wallet_keypair": SecretStr(str(wallet)),
                                           "wallet_address": str(wallet.pubkey())})
    path = Path(settings.data_dir) / "dev-wallet.json"
    if path.exists():
        secret = json.loads(path.read_text())["secret"]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = str(Keypair())
        write_private(path, json.dumps({"secret": secret,
                                        "note": "dev wallet: simulated and local chains only"}))
    return settings.model_copy(update={
        "wallet_keypair": SecretStr(secret),
        "wallet_address": str(Keypair.from_base58_string(secret).pubkey())})


API_KEY_FILE = "api-key"


def resolve_dev_key(settings: Settings) -> str | None:
    """Make sure a client can authenticate; return the dev key when there is one.

    On a loopback bind, reuse the key in `<data_dir>/api-key` while it is valid, or create a
    trade key for `default_account` and write it there (0600), where the CLI, `dexec bench`
    and scripts find it. On any other bind there is no dev key: refuse to start until a key
    exists (`dexec keys create`), since anyone who can reach the port could trade.
    """
    if settings.database_url is None:
        raise RuntimeError("database_url must be resolved before the dev key")
    return asyncio.run(_resolve_dev_key(settings, settings.database_url.get_secret_value()))


async def _resolve_dev_key(settings: Settings, url: str) -> str | None:
    db = Database(url, min_size=1, max_size=1)
    await db.open()
    try:
        keys = KeyStore(db)
        if settings.host not in LOOPBACK:
            if not await keys.any_active():
                raise RuntimeError(
                    f"dexec binds {settings.host}, not loopback, and no API key exists: create"
                    " one first with `dexec keys create --account NAME`")
            return None
        path = Path(settings.data_dir) / API_KEY_FILE
        if path.exists():
            token = path.read_text().strip()
            if await keys.principal(token) is not None:
                return token
            path.unlink()  # revoked, or from another database
        path.parent.mkdir(parents=True, exist_ok=True)
        key = await keys.create(settings.default_account, Scope.TRADE)
        write_private(path, key.token + "\n")
        return key.token
    finally:
        await db.close()


def client_key(data_dir: Path) -> str | None:
    """Return the key a client on this machine uses: DEXEC_API_KEY, else the dev key file."""
    key = os.environ.get("DEXEC_API_KEY")
    if key:
        return key.strip()
    path = Path(data_dir) / API_KEY_FILE
    return path.read_text().strip() if path.exists() else None
