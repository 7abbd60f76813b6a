"""PostgreSQL plumbing: connection pools, the numbered-migration runner and named-query files."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


# What asyncpg lets out when the database itself is gone (stopped, restarting, unreachable), as opposed to a
# statement it refused: nothing was done, and the same request may succeed once the database is back.
_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,
)
_UNREACHABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the database cannot be reached right now."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: the error, and what it was raised from or while handling
        if seen is None:
            return False
        if isinstance(seen, _LOST):
            return True
        if isinstance(seen, asyncpg.InterfaceError) and "connection is closed" in str(seen):
            return True
        if isinstance(seen, OSError) and (seen.errno in _UNREACHABLE or str(seen).startswith("Multiple exceptions")):
            return True  # connecting failed (asyncio joins one failure per address into "Multiple exceptions")
        seen = seen.__cause__ or seen.__context__
    return False


def load_queries(path: Path) -> dict[str, str]:
    """Split a .sql file into named queries, each introduced by a ``-- name: <name>`` line."""
    text = path.read_text()
    parts = _NAME_RE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{path.name}: query {name} defined twice")
        queries[name] = body.strip()
    return queries


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection as it is (asyncpg has already rolled back any open transaction)."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20, reset: bool = True) -> asyncpg.Pool:
    """A pool; ``reset=False`` for a service that never changes session state (SET, LISTEN, advisory locks held
    past a call, cursors) saves the reset query asyncpg otherwise sends on every release."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, reset=None if reset else _keep_session)
    assert pool is not None
    return pool


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{directory}: migrations must be numbered 0001, 0002, ... without gaps")
    return found


async def migrate(conn: Connection, service: str, directory: Path) -> list[str]:
    """Apply the service's not-yet-applied migrations in order, each in its own transaction.

    Safe to run from several processes at once: an advisory lock serialises the runners.
    Returns the names of the files applied now.
    """
    applied: list[str] = []
    # Lock first: even CREATE TABLE IF NOT EXISTS races when two processes start at once.
    await conn.execute("SELECT pg_advisory_lock(hashtext('timebank_migrations'))")
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS public.timebank_migrations (
                   service text NOT NULL, version int NOT NULL, name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (service, version))"""
        )
        done = {
            r["version"]
            for r in await conn.fetch("SELECT version FROM public.timebank_migrations WHERE service = $1", service)
        }
        for version, path in migration_files(directory):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO public.timebank_migrations (service, version, name) VALUES ($1, $2, $3)",
                    service,
                    version,
                    path.name,
                )
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('timebank_migrations'))")
    return applied
