"""A local cluster (Ledger + JSON-RPC server) on a loopback port, inside the test's loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction, VersionedTransaction
from starlette.types import ASGIApp

from core.quotes import TxStatus
from gateways.base import VenueGateway
from gateways.localnet.ledger import Ledger
from gateways.localnet.server import Faults, RpcServer
from gateways.solana import cpmm
from gateways.solana.rpc import SolanaRpc

SOL = Pubkey.from_string("So11111111111111111111111111111111111111112")
USDC = Pubkey.from_string("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


@dataclass
class Cluster:
    url: str
    server: RpcServer
    wallet: Keypair
    pool: Pubkey

    @property
    def ledger(self) -> Ledger:
        return self.server.ledger

    def swap(self, amount_in: int, minimum_out: int, blockhash: str, memo: str = "o-1") -> bytes:
        me = self.wallet.pubkey()
        accounts = cpmm.SwapAccounts.for_pool(self.pool, self.ledger.pool_state(self.pool), me,
                                              SOL)
        ixs = [Instruction(MEMO, memo.encode(), [AccountMeta(me, True, False)]),
               cpmm.swap_base_input(accounts, amount_in, minimum_out)]
        return bytes(Transaction.new_signed_with_payer(ixs, me, [self.wallet],
                                                       Hash.from_string(blockhash)))

    def tokens(self, mint: Pubkey) -> int:
        ata = get_associated_token_address(self.wallet.pubkey(), mint)
        return self.ledger.token_amount(ata) or 0

    def set_faults(self, **changes: object) -> None:
        self.server.faults = Faults(**changes)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_server(server: uvicorn.Server) -> asyncio.Task[None]:
    """Serve in this loop; return once it listens."""
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started:
            return task
        await asyncio.sleep(0.01)
    raise RuntimeError("the server did not start")


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port inside this loop; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = await start_server(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def seeded_ledger(**options: Any) -> tuple[Ledger, Pubkey, Keypair]:
    """A ledger with SOL and USDC mints, one CPMM pool and a wallet holding 10 SOL in
    lamports, 5 wrapped SOL and an empty USDC account: (ledger, pool, wallet)."""
    ledger = Ledger(**options)
    ledger.create_mint(SOL, 9)
    ledger.create_mint(USDC, 6)
    pool = ledger.add_cpmm_pool(SOL, USDC, 200_000 * 10**9, 30_000_000 * 10**6)
    wallet = Keypair()
    ledger.airdrop(wallet.pubkey(), 10 * 10**9)
    ledger.fund_tokens(wallet.pubkey(), SOL, 5 * 10**9)
    ledger.fund_tokens(wallet.pubkey(), USDC, 0)
    return ledger, pool, wallet


@contextlib.asynccontextmanager
async def local_cluster(slot_s: float = 0.05) -> AsyncIterator[Cluster]:
    """A seeded cluster (`seeded_ledger`) behind its JSON-RPC server."""
    ledger, pool, wallet = seeded_ledger(slot_s=slot_s)
    server = RpcServer(ledger, test_hooks=True)
    async with serving(server.app()) as url:
        yield Cluster(url, server, wallet, pool)


async def landed(venue: VenueGateway, signature: str) -> TxStatus:
    """The signature's status once it landed (confirmed, or failed on chain)."""
    for _ in range(200):
        (status,) = await venue.statuses([signature])
        if status is not None and status.landed:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"{signature} never landed")


def memos(data_dir: Path) -> list[tuple[str, str]]:
    """(signature, memo) of every transaction the cluster executed, from its journal."""
    found = []
    journal = data_dir / "localnet" / "journal.jsonl"
    for line in journal.read_text().splitlines():
        entry = json.loads(line)
        if entry["op"] != "tx":
            continue
        tx = VersionedTransaction.from_bytes(base64.b64decode(entry["b"]))
        keys = tx.message.account_keys
        for ix in tx.message.instructions:
            if keys[ix.program_id_index] == MEMO:
                found.append((str(tx.signatures[0]), bytes(ix.data).decode()))
    return found


async def landed_swaps(data_dir: Path, rpc: SolanaRpc, order_id: str) -> list[str]:
    """The order's transactions that executed successfully on the chain."""
    mine = [s for s, memo in memos(data_dir) if memo.startswith(f"dexec:{order_id}:")]
    states = await rpc.statuses(mine, search_history=True) if mine else []
    return [s.signature for s in states if s is not None and s.err is None]
