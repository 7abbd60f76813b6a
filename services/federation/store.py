"""The federation's SQL: verified copies of neighbours' logs, and the count of what was refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from shared.db import Connection, load_queries
from shared.logverify import TreeState

MIGRATIONS = Path(__file__).parent / "migrations"
Q = load_queries(Path(__file__).parent / "queries.sql")


class Replica(msgspec.Struct, frozen=True, kw_only=True):
    """Our verified copy of a neighbour's log: its tree so far and the checkpoint it was verified against."""

    origin: str
    tree: TreeState
    checkpoint: bytes | None
    updated_at: datetime


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    reason: str
    count: int
    last_detail: str
    last_at: datetime


def _edge(raw: bytes) -> tuple[bytes, ...]:
    return tuple(raw[i : i + 32] for i in range(0, len(raw), 32))


def _replica(row: asyncpg.Record) -> Replica:
    return Replica(
        origin=row["origin"],
        tree=TreeState(row["size"], _edge(bytes(row["edge"]))),
        checkpoint=None if row["checkpoint"] is None else bytes(row["checkpoint"]),
        updated_at=row["updated_at"],
    )


async def replica(conn: Connection, origin: str) -> Replica:
    """The copy of ``origin``'s log (made empty the first time it is asked for)."""
    await conn.execute(Q["ensure_replica"], origin)
    row = await conn.fetchrow(Q["replica"], origin)
    assert row is not None
    return _replica(row)


async def replicas(conn: Connection) -> list[Replica]:
    return [_replica(row) for row in await conn.fetch(Q["replicas"])]


async def append_verified(
    conn: Connection, origin: str, old: TreeState, new: TreeState, checkpoint: bytes, entries: list[bytes]
) -> bool:
    """Append verified entries that grow the copy from ``old`` to ``new``; False if the copy was not at ``old``."""
    moved = await conn.fetchval(
        Q["append_verified"], origin, old.size, new.size, b"".join(new.edge), checkpoint, entries
    )
    return bool(moved)


async def replica_entries(conn: Connection, origin: str, start: int, end: int) -> list[bytes]:
    return [bytes(r["data"]) for r in await conn.fetch(Q["replica_entries"], origin, start, end)]


async def count_rejection(conn: Connection, origin: str, reason: str, detail: str) -> None:
    await conn.execute(Q["count_rejection"], origin, reason, detail[:500])


async def rejections(conn: Connection) -> list[Rejection]:
    return [
        Rejection(
            origin=r["origin"], reason=r["reason"], count=r["count"], last_detail=r["last_detail"], last_at=r["last_at"]
        )
        for r in await conn.fetch(Q["rejections"])
    ]
