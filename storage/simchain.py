"""The simulated chain's durable state in PostgreSQL (schema `simchain`, migration 002).

storage and gateways never import each other, so this store works on plain rows only:
a mapping of table name to a list of row dicts, exactly what
`gateways.simulated.chain.ChainChanges.as_rows()` returns and
`ChainSnapshot.from_rows()` takes. The actor shell converts between the two.

    meta         0 or 1 row: seed, start_time, start_height, block_time_s, valid_blocks,
                 fair_prices (dict[str, str]), rng_state (str)
    transactions signature, state, owner, pool, amount_in, min_amount_out, x_to_y,
                 last_valid_block_height, land_at, block_height, amount_out, error, error_code,
                 sent_at
    pools        address, state (bytes)
    balances     owner, symbol, amount
    blockhashes  blockhash, height
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.rows import dict_row

from storage.database import Database, rows_from, rows_param

log = logging.getLogger(__name__)

ChainRows = Mapping[str, Sequence[Mapping[str, Any]]]

_TX_COLUMNS = (
    "signature", "state", "owner", "pool", "amount_in", "min_amount_out", "x_to_y",
    "last_valid_block_height", "land_at", "block_height", "amount_out", "error", "error_code",
    "sent_at",
)
_META_COLUMNS = (
    "seed", "start_time", "start_height", "block_time_s", "valid_blocks", "fair_prices",
    "rng_state",
)


def _upsert_many(table: str, columns: Sequence[tuple[str, str]], key: Sequence[str]) -> str:
    """Return one upsert of any number of rows, sent as one parameter (see rows_param; each
    row's values in `columns` order). A change set holds each key once, as it must."""
    names = [c for c, _ in columns]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key)
    return (
        f"INSERT INTO simchain.{table} ({', '.join(names)})"  # noqa: S608
        f" SELECT * FROM {rows_from(columns, 'r')}"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_TX_TYPES = ("text", "text", "text", "text", "numeric", "numeric", "bool", "bigint", "float8",
             "bigint", "numeric", "text", "text", "float8")
_META_TYPES = ("bigint", "float8", "bigint", "float8", "integer", "jsonb", "text")
_ROW_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    # The single meta row has id true.
    "meta": (("id", "bool"), *zip(_META_COLUMNS, _META_TYPES, strict=True)),
    "transactions": tuple(zip(_TX_COLUMNS, _TX_TYPES, strict=True)),
    "pools": (("address", "text"), ("state", "bytea")),
    "balances": (("owner", "text"), ("symbol", "text"), ("amount", "numeric")),
    "blockhashes": (("blockhash", "text"), ("height", "bigint")),
}
_KEYS = {"meta": ("id",), "transactions": ("signature",), "pools": ("address",),
         "balances": ("owner", "symbol"), "blockhashes": ("blockhash",)}
_SAVE = {table: _upsert_many(table, columns, _KEYS[table])
         for table, columns in _ROW_COLUMNS.items()}
# Blockhashes the chain forgot (expired long ago), except any this save writes: one
# statement must not change a row twice.
_FORGET = ("DELETE FROM simchain.blockhashes WHERE height < %s"
           " AND blockhash <> ALL(%s::text[])")

_LOAD = {
    "meta": f"SELECT {', '.join(_META_COLUMNS)} FROM simchain.meta",  # noqa: S608
    "transactions": f"SELECT {', '.join(_TX_COLUMNS)} FROM simchain.transactions",  # noqa: S608
    "pools": "SELECT address, state FROM simchain.pools",
    "balances": "SELECT owner, symbol, amount FROM simchain.balances",
    "blockhashes": "SELECT blockhash, height FROM simchain.blockhashes",
}


class SimChainStore:
    """Save the simulated chain's changes and load its whole state back, as plain rows."""

    def __init__(self, conninfo: str) -> None:
        self.db = Database(conninfo, min_size=1, max_size=2)
        # Saves run one at a time, in call order, so an older change never overwrites a newer.
        self._save_lock = asyncio.Lock()

    async def open(self, wait_s: float = 30.0) -> None:
        """Open the pool and wait until its first connection is ready."""
        await self.db.open(wait_s)

    async def close(self) -> None:
        await self.db.close()

    async def load(self) -> dict[str, list[dict[str, Any]]] | None:
        """Return every stored row per table, or None when no chain has been stored yet.

        Rows come back as the database gives them (numeric as Decimal, bytea as bytes);
        `ChainSnapshot.from_rows()` normalises them.
        """
        rows: dict[str, list[dict[str, Any]]] = {}
        async with self.db.connection(transaction=True) as conn:
            # One consistent view even if a save commits meanwhile.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = conn.cursor(row_factory=dict_row)
            for table, query in _LOAD.items():
                await cur.execute(query)
                rows[table] = list(await cur.fetchall())
        if not rows["meta"]:
            return None
        for pool in rows["pools"]:
            pool["state"] = bytes(pool["state"])
        return rows

    async def save(self, changes: ChainRows) -> None:
        """Upsert one change set (rows per table, any table may be absent) atomically.

        Saves are applied in the order they are called, and each returns only after every
        earlier one has finished, even an empty one: a caller whose changes an earlier
        caller's set already carried still waits until they are durable. A change set is one
        statement (a CTE per table), one round trip: on its own it is one transaction.
        """
        parts: list[str] = []
        params: list[Any] = []
        counts: dict[str, int] = {}
        for table, columns in _ROW_COLUMNS.items():
            rows = list(changes.get(table, ()))
            if not rows:
                continue
            if table == "meta":
                rows = [{**row, "id": True, "fair_prices": json.dumps(dict(row["fair_prices"]))}
                        for row in rows]
            counts[table] = len(rows)
            parts.append(f"{table} AS ({_SAVE[table]})")
            params.append(rows_param([[row[c] for c, _ in columns] for row in rows]))
        floor = [int(row["height"]) for row in changes.get("blockhash_floor", ())]
        if floor:
            parts.append(f"forget AS ({_FORGET})")
            params += [max(floor), [str(row["blockhash"])
                                    for row in changes.get("blockhashes", ())]]
        async with self._save_lock:
            if not parts:
                return
            async with self.db.connection() as conn:
                await conn.execute(f"WITH {', '.join(parts)} SELECT 1", params)
        log.debug("saved simulated chain changes: %s", counts)
