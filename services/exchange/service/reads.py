"""What the web pages show beyond the JSON API's own reads: members' and listings' names beside the ids an
exchange holds, a statement's counterparties by name, an invitation's link, a payee's name, impact by week.

Each read takes one connection from the pool for its queries; nothing here decides or writes.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.exchange import auth, store
from shared.errors import NotFound

POT_NAME = "the community pot"


async def party_names(pool: asyncpg.Pool, shown: list[store.ExchangeView]) -> dict[str, str]:
    """The names of every party to ``shown``, by member id and by ledger account ("" once erased)."""
    members = sorted({p.member for ex in shown for p in ex.parties})
    async with pool.acquire() as conn:
        return await store.names(conn, members)


async def listing_titles(pool: asyncpg.Pool, shown: list[store.ExchangeView]) -> dict[str, str]:
    """The titles of the listings ``shown`` exchanges were proposed on, by listing id."""
    async with pool.acquire() as conn:
        return await store.titles(conn, [ex.listing for ex in shown if ex.listing])


async def counterparties(pool: asyncpg.Pool, accounts: list[str]) -> dict[str, str]:
    """Members' names by ledger account, the community pot's included, for a statement's lines."""
    async with pool.acquire() as conn:
        names = await store.names(conn, [], accounts)
        pot = await store.pot_account(conn)
    if pot:
        names[pot] = POT_NAME
    return names


async def member(pool: asyncpg.Pool, member_id: str) -> store.MemberView | None:
    """The member as the exchange's read model holds them, or None."""
    async with pool.acquire() as conn:
        return await store.member(conn, member_id)


async def pot_account(pool: asyncpg.Pool) -> str | None:
    """The community pot's ledger account, once the exchange has opened it."""
    async with pool.acquire() as conn:
        return await store.pot_account(conn)


async def recipient_name(pool: asyncpg.Pool, member_id: str) -> str | None:
    """The name of the member hours would be sent to, if they can receive them (approved)."""
    found = await member(pool, member_id)
    return found.name if found is not None and found.status == "approved" else None


async def invitation(pool: asyncpg.Pool, token: str) -> store.InvitationView:
    """The invitation behind a join link's token."""
    async with pool.acquire() as conn:
        found = await store.invitation(conn, auth.token_digest(token))
    if found is None:
        raise NotFound("this invitation link is not valid; ask your coordinator for a new one")
    return found


def by_week(rows: list[store.ImpactRow]) -> dict[datetime, list[store.ImpactRow]]:
    """Impact rows grouped by their week, in the order given."""
    weeks: dict[datetime, list[store.ImpactRow]] = {}
    for row in rows:
        weeks.setdefault(row.week, []).append(row)
    return weeks
