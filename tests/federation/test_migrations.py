"""The federation's schema: its migrations apply to an empty database once, and every named query fits it."""

from __future__ import annotations

import asyncpg

from services.federation import store
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
