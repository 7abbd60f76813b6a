"""Fresh databases for the ``timebank bench`` commands: on a server the caller names, or on a private cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.node.postgres import PostgresServer


@dataclass(frozen=True)
class BenchDatabases:
    urls: list[str]  # one per name asked for, each dropped and created afresh
    postmaster: int | None  # the private cluster's postmaster pid (None on a server given by URL)


@asynccontextmanager
async def bench_databases(database_url: str | None, workdir: Path, *names: str) -> AsyncIterator[BenchDatabases]:
    """Drop and create the databases ``names`` on the server of ``database_url``, or, without one, on a private
    PostgreSQL cluster under ``workdir`` (fsync and synchronous_commit on), stopped when the block ends."""
    server = None
    if database_url:
        admin = database_url
    else:
        print("starting a private PostgreSQL (fsync and synchronous_commit on) ...", flush=True)
        server = PostgresServer(workdir / "pg")
        server.start()
        admin = server.dsn()
    try:
        conn = await asyncpg.connect(admin)
        try:
            for name in names:
                await conn.execute(f"DROP DATABASE IF EXISTS {name}")
                await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        base = admin.rsplit("/", 1)[0]
        postmaster = None
        if server is not None:
            postmaster = int((workdir / "pg" / "postmaster.pid").read_text().split()[0])
        yield BenchDatabases([f"{base}/{name}" for name in names], postmaster)
    finally:
        if server is not None:
            server.stop()
