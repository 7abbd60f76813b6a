"""Operator commands on a node's database: apply every service's migrations, rebuild the exchange's read models."""

from __future__ import annotations

import asyncio

import asyncpg

from services.exchange import projections
from services.exchange import store as exchange_store
from services.federation import store as federation_store
from services.ledger import store as ledger_store
from shared.db import create_pool, migrate
from shared.settings import Settings


async def migrate_all(url: str) -> list[str]:
    """Apply every service's pending migrations (ledger, exchange, federation); return the names applied, in order."""
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return [
                *await migrate(conn, "ledger", ledger_store.MIGRATIONS),
                *[f"exchange/{n}" for n in await migrate(conn, "exchange", exchange_store.MIGRATIONS)],
                *[f"federation/{n}" for n in await migrate(conn, "federation", federation_store.MIGRATIONS)],
            ]
    finally:
        await pool.close()


def run_migrate(settings: Settings) -> int:
    """``timebank migrate``: bring the configured database up to date and say what was applied."""
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL) to migrate")
    applied = asyncio.run(migrate_all(settings.database.url))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


async def rebuild_exchange(url: str) -> int:
    """Replay the exchange's events into emptied read models; return how many streams were replayed."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            return await projections.rebuild(conn)
    except (asyncpg.InvalidSchemaNameError, asyncpg.UndefinedTableError):
        raise SystemExit("timebank: the database has no exchange schema yet; run `timebank migrate`") from None
    finally:
        await conn.close()


def run_rebuild(settings: Settings, service: str) -> int:
    """Replay the service's events into emptied read models, in one transaction (readers wait, never see gaps)."""
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL) to rebuild")
    streams = asyncio.run(rebuild_exchange(settings.database.url))
    print(f"rebuilt the {service}'s read models: replayed {streams} streams")
    return 0
