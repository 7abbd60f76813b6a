"""The exchange's private event store: one ordered stream per aggregate, optimistic concurrency per stream.

``append_write`` writes events at the versions after the one the caller read; if another writer got there first
the unique (stream, version) refuses it and the caller retries from a fresh read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

from services.exchange import events as ev
from services.exchange.writes import Write
from shared.db import Connection


class StreamConflict(Exception):
    """Another writer appended to the stream since it was read."""


async def load(conn: Connection, stream: str) -> tuple[int, list[ev.AnyEvent]]:
    """The stream's events in order and its current version (0 when it does not exist)."""
    rows = await conn.fetch("SELECT version, data FROM exchange.events WHERE stream = $1 ORDER BY version", stream)
    return (rows[-1]["version"] if rows else 0), [ev.decoder.decode(r["data"]) for r in rows]


class Loaded(NamedTuple):
    """A stream as a command reads it: its version, its events, and the data key of the subject named like it."""

    version: int
    history: list[ev.AnyEvent]
    key: bytes | None


async def load_with_keys(conn: Connection, streams: list[str]) -> dict[str, Loaded]:
    """Streams as ``load`` reads them, with the data key of the subject named like each (a member's details, an
    exchange's or a payment's memos), which a command on the stream is likely to open or seal: one round trip."""
    found: dict[str, Loaded] = {}
    for row in await conn.fetch(_LOAD_WITH_KEYS, streams):
        loaded = found.get(row["stream"])
        if loaded is None:
            loaded = found[row["stream"]] = Loaded(0, [], row["key"])
        if row["version"] is not None:
            loaded.history.append(ev.decoder.decode(row["data"]))
            found[row["stream"]] = loaded._replace(version=row["version"])
    return found


_LOAD_WITH_KEYS = """
SELECT s.stream, e.version, e.data, k.key
FROM unnest($1::text[]) AS s (stream)
LEFT JOIN exchange.events e ON e.stream = s.stream
LEFT JOIN exchange.subject_keys k ON k.subject = s.stream
ORDER BY s.stream, e.version
"""
_APPEND = """
INSERT INTO exchange.events (stream, version, type, data, at)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bytea[], $5::timestamptz[])
"""


def append_write(new: list[tuple[str, int, ev.AnyEvent]]) -> Write:
    """The statement appending (stream, version, event) rows; a version another writer took first fails it on
    ``events_stream_version_key``, which the caller turns into a StreamConflict."""
    return Write(
        _APPEND,
        (
            [stream for stream, _, _ in new],
            [version for _, version, _ in new],
            [ev.tag_of(event) for _, _, event in new],
            [ev.encoder.encode(event) for _, _, event in new],
            [event.at for _, _, event in new],
        ),
        rows=True,
    )


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
