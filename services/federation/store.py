"""The federation's SQL: verified copies of neighbours' logs (entries, checkpoints, hash tiles), what was refused,
our witness's records and evidence, cross-network payments and peers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from services.federation.settle import CrossnetEvent
from shared import merkle, tiles
from shared.db import Connection, load_queries
from shared.logverify import TreeState
from shared.settings import PeerSettings
from shared.tiles import RightEdge

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


async def held_replica(conn: Connection, origin: str) -> Replica | None:
    """The copy of ``origin``'s log if one was started (reads only)."""
    row = await conn.fetchrow(Q["replica"], origin)
    return None if row is None else _replica(row)


async def replicas(conn: Connection) -> list[Replica]:
    return [_replica(row) for row in await conn.fetch(Q["replicas"])]


async def append_verified(
    conn: Connection,
    origin: str,
    old: TreeState,
    new: TreeState,
    checkpoints: list[tuple[int, bytes]],
    entries: list[bytes],
    leaves: list[bytes] | None = None,
) -> bool:
    """Append verified entries that grow the copy from ``old`` to ``new`` (``checkpoints``: the (size, note) of
    each checkpoint they were verified against, the last for ``new``; ``leaves``: the entries' leaf hashes, if the
    caller has them), with the copy's hash tiles; False if the copy was not at ``old``."""
    async with conn.transaction():
        # The row lock keeps two writers from growing the tiles from one right edge.
        if await conn.fetchval(Q["lock_replica"], origin) != old.size:
            return False
        edge = await _right_edge(conn, origin, old)
        if leaves is None:
            leaf = merkle.leaf_hash
            leaves = [leaf(data) for data in entries]
        edge.extend(leaves)
        if edge.root() != new.root:
            raise RuntimeError(f"the tiles of our copy of {origin} do not make its verified tree of {new.size:,}")
        grown = edge.take_dirty()
        pieces = _bundle_pieces(old.size, entries)
        moved = await conn.fetchval(
            Q["append_verified"],
            origin,
            old.size,
            new.size,
            b"".join(new.edge),
            checkpoints[-1][1],
            [data for _, _, data in pieces],
            [size for size, _ in checkpoints],
            [note for _, note in checkpoints],
            [level for level, _, _ in grown],
            [index for _, index, _ in grown],
            [data for _, _, data in grown],
            [index for index, _, _ in pieces],
            [width for _, width, _ in pieces],
        )
    return bool(moved)


def _bundle_pieces(start: int, entries: list[bytes]) -> list[tuple[int, int, bytes]]:
    """``entries`` (from ``start``) cut at bundle ends, as (bundle index, entries, bytes to append to that bundle)."""
    pieces = []
    at = 0
    while at < len(entries):
        index = start + at
        take = min(tiles.TILE_WIDTH - index % tiles.TILE_WIDTH, len(entries) - at)
        pieces.append((index // tiles.TILE_WIDTH, take, tiles.join_entry_bundle(entries[at : at + take])))
        at += take
    return pieces


# Entries read at once when a copy's tiles are rebuilt.
REBUILD_PAGE = 16384


async def _right_edge(conn: Connection, origin: str, tree: TreeState) -> RightEdge:
    """The right edge of the copy's stored tiles, which must make ``tree``; rebuilt from the stored entries when
    they do not (a copy stored before tiles were kept)."""
    rows = await conn.fetch(Q["copy_right_edge_tiles"], origin)
    try:
        edge = RightEdge.from_tiles(tree.size, {r["level"]: bytes(r["hashes"]) for r in rows})
    except ValueError:
        edge = None
    if edge is not None and edge.root() == tree.root:
        return edge
    edge = RightEdge()
    leaf = merkle.leaf_hash
    for start in range(0, tree.size, REBUILD_PAGE):
        page = await replica_entries(conn, origin, start, min(tree.size, start + REBUILD_PAGE))
        edge.extend([leaf(data) for data in page])
        rebuilt = edge.take_dirty()
        await conn.execute(
            Q["put_copy_tiles"], origin, [t[0] for t in rebuilt], [t[1] for t in rebuilt], [t[2] for t in rebuilt]
        )
    if edge.size != tree.size or edge.root() != tree.root:
        raise RuntimeError(f"the stored entries of our copy of {origin} do not make its verified tree")
    return edge


class CopyTiles:
    """Our verified copy of one neighbour's log, read on one connection (a ``shared.tiledlog.StoredLog``)."""

    def __init__(self, conn: Connection, origin: str) -> None:
        self._conn = conn
        self._origin = origin

    async def tiles(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not keys:
            return {}
        levels, indexes = zip(*keys, strict=True)
        rows = await self._conn.fetch(Q["copy_tiles_by_coord"], self._origin, list(levels), list(indexes))
        return {(r["level"], r["idx"]): bytes(r["hashes"]) for r in rows}

    async def tile(self, level: int, index: int) -> bytes | None:
        value = await self._conn.fetchval(Q["copy_tile"], self._origin, level, index)
        return None if value is None else bytes(value)

    async def entries(self, start: int, end: int) -> list[bytes]:
        return await replica_entries(self._conn, self._origin, start, end)

    async def entry_bundle(self, start: int, width: int) -> bytes | None:
        entries = await replica_entries(self._conn, self._origin, start, start + width)
        return tiles.join_entry_bundle(entries) if len(entries) == width else None


async def reset_copy(conn: Connection, origin: str) -> None:
    """Drop our copy of ``origin``'s log and our witness's record of it (in the caller's transaction)."""
    await conn.execute(Q["reset_copy"], origin)


async def replica_checkpoint_at(conn: Connection, origin: str, size: int) -> bytes | None:
    """The neighbour's signed note our copy was verified against at ``size``, if the copy passed that size."""
    note = await conn.fetchval(Q["replica_checkpoint_at"], origin, size)
    return None if note is None else bytes(note)


async def replica_entries(conn: Connection, origin: str, start: int, end: int) -> list[bytes]:
    """Entries [start, end) of our copy of ``origin``'s log (fewer if the copy ends sooner)."""
    if end <= start:
        return []
    width = tiles.TILE_WIDTH
    rows = await conn.fetch(Q["replica_bundles"], origin, start // width, (end - 1) // width)
    entries: list[bytes] = []
    for row in rows:
        first = row["idx"] * width
        held = tiles.split_entry_bundle(bytes(row["data"]))
        entries.extend(held[max(0, start - first) : max(0, end - first)])
    return entries


async def count_rejection(conn: Connection, origin: str, reason: str, detail: str) -> None:
    await conn.execute(Q["count_rejection"], origin, reason, detail[:500])


async def rejections(conn: Connection) -> list[Rejection]:
    return [
        Rejection(
            origin=r["origin"], reason=r["reason"], count=r["count"], last_detail=r["last_detail"], last_at=r["last_at"]
        )
        for r in await conn.fetch(Q["rejections"])
    ]


# ---- witnessing ----


class Witnessed(msgspec.Struct, frozen=True, kw_only=True):
    """The latest checkpoint our witness cosigned for a log."""

    size: int
    root: bytes
    note: bytes


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """Two signed checkpoints of one log that cannot both be true."""

    id: int
    origin: str
    kind: str
    first_note: bytes
    second_note: bytes
    detail: str
    detected_at: datetime
    # How a coordinator resolved it ("dismiss" or "reset"), why and when; None while it is open.
    resolution: str | None = None
    reason: str | None = None
    resolved_at: datetime | None = None


class Cosigner(msgspec.Struct, frozen=True, kw_only=True):
    witness: str
    size: int
    cosigned_at: datetime


async def witnessed(conn: Connection, origin: str) -> Witnessed | None:
    row = await conn.fetchrow(Q["witnessed"], origin)
    return None if row is None else Witnessed(size=row["size"], root=bytes(row["root"]), note=bytes(row["note"]))


async def witness_advance(conn: Connection, origin: str, old: int, size: int, root: bytes, note: bytes) -> bool:
    """Move the witness's record for ``origin`` from ``old`` to this checkpoint; False if it was not at ``old``."""
    return await conn.fetchval(Q["witness_advance"], origin, old, size, root, note) is not None


async def add_evidence(conn: Connection, origin: str, kind: str, first: bytes, second: bytes, detail: str) -> None:
    await conn.execute(Q["add_evidence"], origin, kind, first, second, detail)


async def open_evidence(conn: Connection) -> list[Evidence]:
    return [
        Evidence(
            id=r["id"],
            origin=r["origin"],
            kind=r["kind"],
            first_note=bytes(r["first_note"]),
            second_note=bytes(r["second_note"]),
            detail=r["detail"],
            detected_at=r["detected_at"],
        )
        for r in await conn.fetch(Q["open_evidence"])
    ]


async def all_evidence(conn: Connection) -> list[Evidence]:
    """Every piece of evidence kept, open or resolved, oldest first."""
    return [
        Evidence(
            id=r["id"],
            origin=r["origin"],
            kind=r["kind"],
            first_note=bytes(r["first_note"]),
            second_note=bytes(r["second_note"]),
            detail=r["detail"],
            detected_at=r["detected_at"],
            resolution=r["resolution"],
            reason=r["reason"],
            resolved_at=r["resolved_at"],
        )
        for r in await conn.fetch(Q["all_evidence"])
    ]


async def resolve_evidence(conn: Connection, origin: str, resolution: str, reason: str) -> list[int]:
    """Resolve every open piece of evidence against ``origin``'s log; the ids resolved."""
    return [r["id"] for r in await conn.fetch(Q["resolve_evidence"], origin, resolution, reason)]


async def has_open_evidence(conn: Connection, origin: str) -> bool:
    return bool(await conn.fetchval(Q["has_open_evidence"], origin))


async def cosigner_size(conn: Connection, witness: str) -> int:
    return int(await conn.fetchval(Q["cosigner_size"], witness) or 0)


async def set_cosigner_size(conn: Connection, witness: str, size: int) -> None:
    await conn.execute(Q["set_cosigner_size"], witness, size)


async def cosigners(conn: Connection) -> list[Cosigner]:
    return [
        Cosigner(witness=r["witness"], size=r["size"], cosigned_at=r["cosigned_at"])
        for r in await conn.fetch(Q["cosigners"])
    ]


# ---- cross-network payments ----


async def record_crossnet(conn: Connection, events: list[CrossnetEvent]) -> None:
    """Record the steps of our payments to neighbours (steps already recorded are kept as they were), and what they
    put in flight or take out of it."""
    async with conn.transaction():
        new = await conn.fetch(
            Q["record_crossnet"],
            [e.transfer for e in events],
            [e.kind for e in events],
            [e.peer for e in events],
            [e.minutes for e in events],
            [e.index for e in events],
        )
        sent = [r for r in new if r["kind"] == "sent"]
        if sent:
            await conn.execute(
                Q["open_crossnet"],
                [r["transfer"] for r in sent],
                [r["peer"] for r in sent],
                [r["minutes"] for r in sent],
            )
        closed = [r["transfer"] for r in new if r["kind"] in ("accepted", "reversed")]
        if closed:
            await conn.execute(Q["close_crossnet"], closed)


async def in_flight_out(conn: Connection) -> dict[str, tuple[int, int]]:
    """Per neighbour: (payments, minutes) of ours that it has not accepted and we have not reversed."""
    return {r["peer"]: (r["payments"], r["minutes"]) for r in await conn.fetch(Q["in_flight_out"])}


async def pending_decisions(conn: Connection) -> list[bytes]:
    """The stored settlements still waiting for our ledger to decide a neighbour's payment."""
    return [bytes(r["payload"]) for r in await conn.fetch(Q["pending_decisions"])]


# ---- peers ----


class StoredPeer(msgspec.Struct, frozen=True, kw_only=True):
    settings: PeerSettings
    added_at: datetime


async def upsert_peer(conn: Connection, peer: PeerSettings, name: str) -> None:
    """Add the neighbour, or bring it back, or change how it is configured."""
    await conn.execute(
        Q["upsert_peer"],
        peer.origin,
        name,
        peer.log_key,
        peer.witness_key,
        peer.nats_url,
        peer.nats_user,
        peer.nats_password,
        peer.issued_password,
        peer.trust_limit,
    )


async def active_peers(conn: Connection) -> list[StoredPeer]:
    return [
        StoredPeer(
            settings=PeerSettings(
                origin=r["origin"],
                name=r["name"],
                log_key=r["log_key"],
                witness_key=r["witness_key"],
                nats_url=r["nats_url"],
                nats_user=r["nats_user"],
                nats_password=r["nats_password"],
                issued_password=r["issued_password"],
                trust_limit=r["trust_limit"],
            ),
            added_at=r["added_at"],
        )
        for r in await conn.fetch(Q["active_peers"])
    ]


async def remove_peer(conn: Connection, origin: str) -> bool:
    return await conn.fetchval(Q["remove_peer"], origin) is not None


# ---- logs our witness cosigns besides the neighbours' ----


async def upsert_witnessed_log(conn: Connection, origin: str, key: str) -> None:
    await conn.execute(Q["upsert_witnessed_log"], origin, key)


async def witnessed_logs(conn: Connection) -> dict[str, str]:
    """The logs a coordinator (or the settings) named for our witness: origin -> log key text."""
    return {r["origin"]: r["key"] for r in await conn.fetch(Q["witnessed_logs"])}


async def remove_witnessed_log(conn: Connection, origin: str) -> bool:
    return await conn.fetchval(Q["remove_witnessed_log"], origin) is not None
