"""The federation's schema: its migrations apply to an empty database once, and every named query fits it."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import asyncpg

from services.federation import settle, store
from services.federation.settle import Accept
from services.ledger.entries import transfer_id
from shared.db import migrate


async def test_migrations_apply_once_and_every_query_prepares(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        files = sorted(p.name for p in store.MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
        assert files[0] == "0001_federation.sql"
        assert await migrate(conn, "federation", store.MIGRATIONS) == files
        assert await migrate(conn, "federation", store.MIGRATIONS) == []
        for name, sql in store.Q.items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                raise AssertionError(f"query {name} does not fit the schema: {exc}") from exc
    finally:
        await conn.close()


async def test_a_copy_stored_entry_by_entry_is_kept_as_bundles_with_the_same_entries(
    database_url: str, tmp_path: Path
) -> None:
    """Migration 0008 moves a copy's entries into C2SP entry bundles: every range reads back the same bytes."""
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(store.MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        if path.name < "0008":
            shutil.copy(path, before / path.name)
    held = {origin: [secrets.token_bytes(n % 700) for n in range(size)] for origin, size in (("a", 600), ("b", 256))}
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "federation", before)
        for origin, entries in held.items():
            await conn.execute("INSERT INTO federation.replicas (origin, size) VALUES ($1, $2)", origin, len(entries))
            await conn.executemany(
                "INSERT INTO federation.entries (origin, idx, data) VALUES ($1, $2, $3)",
                [(origin, i, data) for i, data in enumerate(entries)],
            )
        later = sorted(p.name for p in store.MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql") if p.name >= "0008")
        assert await migrate(conn, "federation", store.MIGRATIONS) == later
        for origin, entries in held.items():
            for start, end in ((0, len(entries)), (0, 1), (255, 257), (300, 10_000), (len(entries), len(entries) + 5)):
                assert await store.replica_entries(conn, origin, start, end) == entries[start:end], (origin, start)
        widths = await conn.fetch("SELECT origin, idx, width FROM federation.bundles ORDER BY origin, idx")
        assert [tuple(r) for r in widths] == [("a", 0, 256), ("a", 1, 256), ("a", 2, 88), ("b", 0, 256)]
    finally:
        await conn.close()


async def test_upgrade_queues_the_acceptances_already_read_for_our_ledger_to_record(
    database_url: str, tmp_path: Path
) -> None:
    """Before 0009 an acceptance of our payment was only noted in federation.crossnet; the upgrade queues its
    record, as the replicator now would, so that our ledger stops counting those minutes as in flight."""
    conn = await asyncpg.connect(database_url)
    try:
        files = sorted(p.name for p in store.MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
        for name in files[:5]:
            (tmp_path / name).write_text((store.MIGRATIONS / name).read_text())
        await migrate(conn, "federation", tmp_path)
        await conn.execute(
            """INSERT INTO federation.crossnet (transfer, kind, peer, minutes, idx)
               VALUES ($1, 'sent', 'timebank.test/hillside', 60, 3),
                      ($1, 'accepted', 'timebank.test/hillside', 60, 41),
                      ($2, 'sent', 'timebank.test/hillside', 7, 4),
                      ($2, 'rejected', 'timebank.test/hillside', 7, 42)""",
            transfer_id("ok"),
            transfer_id("typo"),
        )
        assert await migrate(conn, "federation", store.MIGRATIONS) == files[5:]
        rows = await conn.fetch("SELECT key, kind, payload FROM federation.outbox WHERE done_at IS NULL")
        accept = Accept(origin="timebank.test/hillside", transfer=transfer_id("ok"), index=41)
        assert [(r["key"], r["kind"], settle.decoder.decode(r["payload"])) for r in rows] == [
            (accept.key, "federation.settle.accept.v1", accept)
        ]
    finally:
        await conn.close()
