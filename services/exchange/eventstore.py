"""The exchange's private event store: one ordered stream per aggregate, optimistic concurrency per stream.

``append`` writes events at the versions after the one the caller read; if another writer got there first the
primary key refuses it and the caller's transaction retries from a fresh read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from services.exchange import events as ev
from shared.db import Connection


class StreamConflict(Exception):
    """Another writer appended to the stream since it was read."""


async def load(conn: Connection, stream: str) -> tuple[int, list[ev.AnyEvent]]:
    """The stream's events in order and its current version (0 when it does not exist)."""
    rows = await conn.fetch("SELECT version, data FROM exchange.events WHERE stream = $1 ORDER BY version", stream)
    return (rows[-1]["version"] if rows else 0), [ev.decoder.decode(r["data"]) for r in rows]


async def append(conn: Connection, stream: str, expected: int, new: list[ev.AnyEvent]) -> None:
    """Append ``new`` after version ``expected``; raises StreamConflict if the stream moved on."""
    if not new:
        return
    try:
        await conn.executemany(
            "INSERT INTO exchange.events (stream, version, type, data, at) VALUES ($1, $2, $3, $4, $5)",
            [
                (stream, expected + i, ev.tag_of(event), ev.encoder.encode(event), event.at)
                for i, event in enumerate(new, start=1)
            ],
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_stream_version_key":
            raise StreamConflict(stream) from exc
        raise


async def all_events(conn: Connection, batch: int = 5000) -> AsyncIterator[tuple[int, str, ev.AnyEvent]]:
    """Every event in global order as (seq, stream, event), for rebuilding read models."""
    last = 0
    while True:
        rows = await conn.fetch(
            "SELECT seq, stream, data FROM exchange.events WHERE seq > $1 ORDER BY seq LIMIT $2", last, batch
        )
        for row in rows:
            yield row["seq"], row["stream"], ev.decoder.decode(row["data"])
        if len(rows) < batch:
            return
        last = rows[-1]["seq"]
