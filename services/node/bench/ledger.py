"""``timebank bench ledger``: group-commit throughput and latency, in-process and over HTTP, beside the bare
insert ceiling, and inclusion-proof latency on a large log. Everything runs in one go on one database server, so
the ratios are comparable even on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import uvloop

from services.ledger import store, tlog
from services.ledger.appender import Appender
from services.ledger.commands import Command, MakeTransfer, OpenAccount, Reverse, fingerprint
from services.ledger.entries import AccountOpened, LogEntry, Transfer, entry_encoder, transfer_id
from services.ledger.ledger import Book, Replay, decide
from services.ledger.tlog import CheckpointSigner
from services.node.bench.loadgen import LoadClient
from services.node.benchdb import bench_databases
from services.node.processes import free_port, server_tempdir
from shared import merkle
from shared.db import create_pool, migrate
from shared.note import Signer, write_signer_key
from shared.tiles import RightEdge

ORIGIN = "bench.timebank.local/ledger"
ACCOUNTS = 1000
ROUNDS = 3
SERVICE_TOKEN = "bench-service-token"


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def line(self) -> str:
        if not self.latencies:
            return f"{self.name:<42} {self.rate:>10,.0f}/s {'':>10} {'':>10}  ({self.count:,} in {self.seconds:.2f} s)"
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return (
            f"{self.name:<42} {self.rate:>10,.0f}/s {q[49] * 1000:>8.2f}ms {q[98] * 1000:>8.2f}ms"
            f"  ({self.count:,} in {self.seconds:.2f} s)"
        )


async def _drive(name: str, total: int, workers: int, op: Callable[[int], Awaitable[None]]) -> Result:
    """Run ``op(i)`` for i in 0..total-1 from ``workers`` concurrent loops; time each call."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Result(name, total, time.perf_counter() - start, latencies)


def _median(name: str, rounds: list[Result]) -> Result:
    """The median round's rate, with every round's latencies."""
    middle = sorted(rounds, key=lambda r: r.rate)[len(rounds) // 2]
    latencies = [latency for r in rounds for latency in r.latencies]
    return Result(f"{name} (median of {len(rounds)})", middle.count, middle.seconds, latencies)


def _transfer(run: str, i: int, accounts: list[str]) -> MakeTransfer:
    payer = accounts[i % len(accounts)]
    payee = accounts[(i * 7 + 1) % len(accounts)]
    if payee == payer:
        payee = accounts[(i + 1) % len(accounts)]
    return MakeTransfer(key=f"{run}-{i}", payer=payer, payee=payee, minutes=1 + i % 120)


async def _bare_insert(pool: asyncpg.Pool, transfers: int, batch: int, data: bytes, rows_per: int) -> Result:
    """The ceiling: ``rows_per`` rows per transfer written by a bare batched insert into a plain table, one
    committed transaction per batch of ``batch`` transfers, no other work."""
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.bench_bare (idx bigint PRIMARY KEY, data bytea NOT NULL)")
        await conn.execute("TRUNCATE public.bench_bare")
        start = time.perf_counter()
        for lo in range(0, transfers, batch):
            n = min(batch, transfers - lo) * rows_per
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO public.bench_bare (idx, data) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    list(range(lo * rows_per, lo * rows_per + n)),
                    [data] * n,
                )
        name = f"bare insert, {rows_per} row{'s' if rows_per > 1 else ''}/transfer"
        return Result(name, transfers, time.perf_counter() - start, [])


async def _in_process(url: str, signer: Signer, transfers: int) -> tuple[list[Result], list[str], float]:
    pool = await create_pool(url, min_size=2, max_size=4)
    appender = Appender(pool, CheckpointSigner(signer), default_floor=-(10**9), max_batch=2000)
    appender.start()
    try:
        accounts = []
        for i in range(ACCOUNTS):
            done = await appender.submit(OpenAccount(key=f"bench-account-{i}", floor=-(10**9)))
            accounts.append(done.entry.account)  # type: ignore[union-attr]

        async def submit(run: str) -> Callable[[int], Awaitable[None]]:
            async def op(i: int) -> None:
                await appender.submit(_transfer(run, i, accounts))

            return op

        results = [await _drive("in-process, 1 submitter", max(transfers // 10, 200), 1, await submit("p1"))]
        sample = entry_encoder.encode(
            Transfer(at=datetime.now(UTC), id=transfer_id("x"), payer=accounts[0], payee=accounts[1], minutes=60)
        )
        # The bare inserts commit 64 rows' worth per transaction: the largest batch 64 waiting submitters can
        # make. (The writer splits a long queue in two to overlap deciding with writing; smaller bare batches
        # would lower the ceiling and flatter the ratio.)
        batch = 64
        # The 64-submitter phase and its ceilings take turns, ROUNDS times, and each reports its median round:
        # one slow moment on a shared machine then skews neither side of the ratio.
        rounds: dict[str, list[Result]] = {}
        b0, c0 = appender.batches, appender.commands
        for r in range(ROUNDS):
            for result in (
                await _drive("in-process, 64 submitters", transfers, 64, await submit(f"p64-{r}")),
                await _bare_insert(pool, transfers, batch, sample, 1),
                # What the ledger itself writes per transfer: the entry and the transfer row.
                await _bare_insert(pool, transfers, batch, sample, 2),
            ):
                rounds.setdefault(result.name, []).append(result)
        mean_batch = (appender.commands - c0) / max(1, appender.batches - b0)
        results += [_median(name, measured) for name, measured in rounds.items()]
        return results, accounts, mean_batch
    finally:
        await appender.stop()
        await pool.close()


async def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the ledger server exited during start-up")
            try:
                if (await http.get(base + "/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the ledger server did not become ready")


@asynccontextmanager
async def serve_node(url: str, workdir: Path) -> AsyncIterator[str]:
    """Run `timebank serve --only ledger` on the database (key in workdir/network.key) for the block; yield its URL."""
    port = free_port()
    config = workdir / f"bench-{port}.toml"
    config.write_text(
        f'origin = "{ORIGIN}"\nkey_file = "{workdir / "network.key"}"\n'
        f'[database]\nurl = "{url}"\nmax_pool = 8\n[http]\nport = {port}\n'
        f'[[ledger.tokens]]\nname = "bench"\nrole = "service"\n'
        f'sha256 = "{hashlib.sha256(SERVICE_TOKEN.encode()).hexdigest()}"\n'
    )
    # A plain child process, not asyncio's: asyncio watches its children with a thread of its own, and the audit
    # benchmark measures a process that runs no other thread (as `timebank audit` of an export is).
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process is quick; watching it would start a thread
        [sys.executable, "-m", "services.node.cli", "--config", str(config), "serve", "--only", "ledger"],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)  # the server stops at once on SIGTERM


async def _over_http(url: str, workdir: Path, accounts: list[str], transfers: int) -> list[Result]:
    async with serve_node(url, workdir) as base:
        host, _, port = base.removeprefix("http://").partition(":")
        http = LoadClient(host, int(port))
        headers = f"Authorization: Bearer {SERVICE_TOKEN}\r\nContent-Type: application/json\r\n".encode()
        try:

            def submit(run: str) -> Callable[[int], Awaitable[None]]:
                async def op(i: int) -> None:
                    status, data = await http.post(
                        "/transfers", headers, entry_encoder.encode(_transfer(run, i, accounts))
                    )
                    if status != 201:
                        raise RuntimeError(f"transfer refused: {status} {data[:200]!r}")

                return op

            return [
                await _drive("HTTP, 1 submitter", max(transfers // 10, 200), 1, submit("h1")),
                await _drive("HTTP, 64 submitters", transfers, 64, submit("h64")),
            ]
        finally:
            http.close()


def bulk_entries(size: int, accounts: int = ACCOUNTS) -> Iterator[tuple[int, LogEntry, Command, Book]]:
    """A valid ledger of ``size`` entries, decided by the ledger's own domain: ``accounts`` opens, then transfers
    among them (every 50th reverses the one 25 before). Yields (index, entry, command, book after the entry)."""
    book = Book(default_floor=-(10**9))
    at = datetime.now(UTC)
    opened: list[str] = []
    made: list[str] = []
    for index in range(size):
        command: Command
        if index < min(accounts, size):
            command = OpenAccount(key=f"bench-account-{index}", floor=-(10**9))
        elif index % 50 == 0 and len(made) > 25:
            command = Reverse(key=f"bench-fix-{index}", transfer=made[-25])
        else:
            n = index * 7919
            payer, payee = opened[n % len(opened)], opened[(n // len(opened) + 1 + n) % len(opened)]
            if payer == payee:
                payee = opened[(opened.index(payer) + 1) % len(opened)]
            command = MakeTransfer(key=f"bench-{index}", payer=payer, payee=payee, minutes=1 + index % 120)
        entry = decide(book, command, at=at, index=index)
        assert not isinstance(entry, Replay)
        if isinstance(entry, AccountOpened):
            opened.append(entry.account)
        elif isinstance(entry, Transfer) and entry.reverses is None:
            made.append(entry.id)
        yield index, entry, command, book


async def grow_log(
    url: str, signer: Signer, size: int, accounts: int = ACCOUNTS, *, checkpoint_every: int | None = None
) -> None:
    """Write a valid ledger of ``size`` entries (see ``bulk_entries``) straight into the ledger's tables, as the
    appender would have left them: entries, accounts, transfers, tiles, head and a signed checkpoint (and one every
    ``checkpoint_every`` entries before it, as batches of that size would have left them)."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "ledger", store.MIGRATIONS)
        edge = RightEdge()
        rows: list[tuple[int, bytes]] = []
        opened: list[tuple[object, ...]] = []
        transfers: list[tuple[object, ...]] = []
        checkpoints: list[tuple[int, bytes]] = []
        cp_signer = CheckpointSigner(signer)
        for index, entry, command, book in bulk_entries(size, accounts):
            data = entry_encoder.encode(entry)
            edge.append(merkle.leaf_hash(data))
            rows.append((index, data))
            if checkpoint_every and (index + 1) % checkpoint_every == 0 and index + 1 < size:
                checkpoints.append((index + 1, cp_signer.sign(index + 1, edge.root())))
            if isinstance(entry, AccountOpened):
                assert isinstance(command, OpenAccount)
                opened.append(
                    (entry.account, entry.kind, entry.floor, entry.ceiling, False, None, index, command.key,
                     fingerprint(command))
                )  # fmt: skip
            elif isinstance(entry, Transfer):
                payer, payee = book.accounts[entry.payer], book.accounts[entry.payee]
                transfers.append(
                    (entry.id, index, fingerprint(command), entry.payer, entry.payee, entry.minutes, entry.reverses,
                     payer.balance, payee.balance)
                )  # fmt: skip
        async with conn.transaction():
            for table, records, columns in (
                ("entries", rows, ["idx", "data"]),
                ("accounts", opened, ["id", "kind", "floor", "ceiling", "closed", "peer", "opened_idx", "open_key",
                                      "open_fingerprint"]),
                ("transfers", transfers, ["id", "idx", "fingerprint", "payer", "payee", "minutes", "reverses",
                                          "payer_balance", "payee_balance"]),
                ("tiles", edge.take_dirty(), ["level", "idx", "hashes"]),
                ("checkpoints", checkpoints, ["size", "note"]),
            ):  # fmt: skip
                await conn.copy_records_to_table(table, schema_name="ledger", records=records, columns=columns)
            root = edge.root()
            await conn.execute("UPDATE ledger.head SET size = $1, root = $2", size, root)
            await conn.execute(
                "INSERT INTO ledger.checkpoints (size, note) VALUES ($1, $2)",
                size,
                cp_signer.sign(size, root),
            )
    finally:
        await conn.close()


async def _proofs(url: str, size: int, samples: int = 500) -> Result:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            head = await store.head(conn)
        rng = random.Random(7)

        async def op(_: int) -> None:
            index = rng.randrange(size)
            async with pool.acquire() as conn:
                proof, leaf, root = await tlog.inclusion_proof(conn, index, size)
            merkle.verify_inclusion(leaf, index, size, proof, head.root)
            assert root == head.root

        return await _drive(f"inclusion proof at {size:,} entries", samples, 1, op)
    finally:
        await pool.close()


async def _main(args: argparse.Namespace, root: Path) -> None:
    async with bench_databases(args.database_url, root, "timebank_bench", "timebank_bench_proof") as databases:
        url, proof_url = databases.urls
        conn = await asyncpg.connect(url)
        sync = await conn.fetchval("SHOW synchronous_commit")
        await conn.close()
        signer = Signer.generate(ORIGIN)
        write_signer_key(root / "network.key", signer)
        pool = await create_pool(url, min_size=1, max_size=1)
        async with pool.acquire() as c:
            await migrate(c, "ledger", store.MIGRATIONS)
        await pool.close()

        print(f"synchronous_commit = {sync}; {os.cpu_count()} CPUs; {args.transfers:,} transfers per phase")
        results, accounts, mean_batch = await _in_process(url, signer, args.transfers)
        results += await _over_http(url, root, accounts, args.transfers)
        print(f"building a {args.proof_size:,}-entry log for the proof benchmark ...", flush=True)
        await grow_log(proof_url, signer, args.proof_size)
        results.append(await _proofs(proof_url, args.proof_size))

        print()
        print(f"{'phase':<42} {'rate':>12} {'p50':>10} {'p99':>10}")
        for r in results:
            print(r.line())
        by = {r.name: r for r in results}
        in64 = by[f"in-process, 64 submitters (median of {ROUNDS})"]
        print()
        print(f"mean group-commit batch with 64 submitters: {mean_batch:.1f} transfers; the bare inserts commit 64")
        for bare in (r for r in results if r.name.startswith("bare insert")):
            print(f"in-process 64 submitters / {bare.name}: {in64.rate / bare.rate:.1%}")


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-")
    try:
        # The node serves on uvloop (see `timebank serve`), so the in-process figures use it too.
        uvloop.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
