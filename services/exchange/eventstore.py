"""The exchange's private event store: one ordered stream per aggregate, optimistic concurrency per stream.

``append_write`` writes events at the versions after the one the caller read; if another writer got there first
the unique (stream, version) refuses it. Whatever constraint a failed write names, ``moved`` tells whether the
writer lost a race (and should retry from a fresh read): the constraint that fires first is not a reliable sign.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from services.exchange import events as ev
from services.exchange.writes import Write
from shared.db import Connection, load_queries

Q = load_queries(Path(__file__).with_name("eventstore.sql"))


class StreamConflict(Exception):
    """Another writer appended to the stream since it was read."""


async def load(conn: Connection, stream: str) -> tuple[int, list[ev.AnyEvent]]:
    """The stream's events in order and its current version (0 when it does not exist)."""
    rows = await conn.fetch(Q["load"], stream)
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
    for row in await conn.fetch(Q["load_with_keys"], streams):
        loaded = found.get(row["stream"])
        if loaded is None:
            loaded = found[row["stream"]] = Loaded(0, [], row["key"])
        if row["version"] is not None:
            loaded.history.append(ev.decoder.decode(row["data"]))
            found[row["stream"]] = loaded._replace(version=row["version"])
    return found


def append_write(new: list[tuple[str, int, ev.AnyEvent]]) -> Write:
    """The statement appending (stream, version, event) rows; a version another writer took first fails it on
    ``events_stream_version_key`` (unless another of the statement's writes fails first: see ``moved``)."""
    return Write(
        Q["append"],
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
        rows = await conn.fetch(Q["all_events"], last, batch)
        for row in rows:
            yield row["seq"], row["stream"], ev.decoder.decode(row["data"])
        if len(rows) < batch:
            return
        last = rows[-1]["seq"]


async def moved(conn: Connection, versions: Mapping[str, int], keyless: Sequence[str]) -> bool:
    """Whether another writer committed since these were read: a stream past the version in ``versions``, or a data
    key for one of the ``keyless`` subjects. A write that failed after that lost a race, whatever constraint fired."""
    found = await conn.fetchval(Q["moved"], list(versions), list(versions.values()), list(keyless))
    return bool(found)
