"""The federation's schema: its migrations apply to an empty database once, and every named query fits it."""

from __future__ import annotations

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


async def test_upgrade_queues_the_acceptances_already_read_for_our_ledger_to_record(
    database_url: str, tmp_path: Path
) -> None:
    """Before 0006 an acceptance of our payment was only noted in federation.crossnet; the upgrade queues its
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
