"""The exchange's read side: named queries over the read models, returned as Structs."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from shared.db import Connection, load_queries
from shared.errors import Invalid

MIGRATIONS = Path(__file__).with_name("migrations")
Q = load_queries(Path(__file__).with_name("queries.sql"))


class MemberView(msgspec.Struct, kw_only=True):
    id: str
    status: str
    role: str
    account: str | None
    name: str
    email: str | None
    skills: list[str]
    area: str
    bio: str
    joined_at: datetime
    approved_at: datetime | None


class PublicMember(msgspec.Struct, kw_only=True):
    """What other members see of a member."""

    id: str
    name: str
    skills: list[str]
    area: str
    bio: str


class ListingView(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    category: str
    title: str
    description: str
    area: str
    availability: str
    shared: bool
    status: str
    expires: datetime
    created_at: datetime
    updated_at: datetime
    member: str | None
    member_name: str | None
    # None for our own network's listings; a neighbour's origin for theirs.
    network: str | None = None


class ListingPage(msgspec.Struct, kw_only=True):
    items: list[ListingView]
    next: str | None = None


class Party(msgspec.Struct, kw_only=True):
    member: str
    side: str
    answer: str | None


class Line(msgspec.Struct, kw_only=True):
    n: int
    provider: str
    receiver: str
    state: str
    minutes: int
    transfer: str | None
    ledger_index: int | None
    settled_at: datetime | None


class ExchangeView(msgspec.Struct, kw_only=True):
    id: str
    status: str
    proposer: str
    listing: str | None
    category: str
    note: str | None
    memo: str | None
    created_at: datetime
    updated_at: datetime
    parties: list[Party]
    lines: list[Line]


class PaymentView(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    payer: str
    payee: str
    minutes: int
    made_by: str
    status: str
    memo: str | None
    transfer: str | None
    ledger_index: int | None
    created_at: datetime


class ImpactRow(msgspec.Struct, kw_only=True):
    week: datetime
    category: str
    minutes: int
    hours: float
    exchanges: int
    active_members: int
    members_helped: int


def _struct(kind: type[Any], row: Any) -> Any:
    return msgspec.convert(dict(row), kind, from_attributes=False)


async def member(conn: Connection, member_id: str) -> MemberView | None:
    row = await conn.fetchrow(Q["member"], member_id)
    return None if row is None else _struct(MemberView, row)


async def names(conn: Connection, members: list[str], accounts: list[str] | None = None) -> dict[str, str]:
    """Members' display names, keyed by member id and by ledger account ("" once erased)."""
    found: dict[str, str] = {}
    for r in await conn.fetch(Q["member_names"], members, accounts or []):
        found[r["id"]] = r["name"]
        if r["account"]:
            found[r["account"]] = r["name"]
    return found


async def titles(conn: Connection, listings: list[str]) -> dict[str, str]:
    return {r["id"]: r["title"] for r in await conn.fetch(Q["listing_titles"], listings)}


class InvitationView(msgspec.Struct, kw_only=True):
    id: str
    role: str
    expires: datetime
    used_by: str | None


async def invitation(conn: Connection, token_sha256: str) -> InvitationView | None:
    row = await conn.fetchrow(Q["invitation_by_token"], token_sha256)
    return None if row is None else _struct(InvitationView, row)


async def members_by_status(conn: Connection, status: str, limit: int) -> list[MemberView]:
    return [_struct(MemberView, r) for r in await conn.fetch(Q["members_by_status"], status, limit)]


async def listing(conn: Connection, listing_id: str) -> ListingView | None:
    row = await conn.fetchrow(Q["listing"], listing_id)
    return None if row is None else _listing(row)


async def member_listings(conn: Connection, member_id: str) -> list[ListingView]:
    return [_listing(r) for r in await conn.fetch(Q["member_listings"], member_id)]


def _listing(row: Any) -> ListingView:
    data = dict(row)
    data.pop("rank", None)
    return msgspec.convert(data, ListingView)


class _Cursor(msgspec.Struct, array_like=True):
    order: str
    id: str
    at: datetime | None = None
    rank: float | None = None


_cursor_decoder = msgspec.json.Decoder(_Cursor)


async def search(
    conn: Connection,
    *,
    q: str,
    category: str | None,
    kind: str | None,
    area: str | None,
    order: str,
    cursor: str | None,
    limit: int,
) -> ListingPage:
    """Active, unexpired listings: ranked by relevance when there is a query (unless ``order`` is newest)."""
    q = q.strip()
    ranked = bool(q) and order == "relevance"
    after = _decode_cursor(cursor, "relevance" if ranked else "newest")
    async with conn.transaction(readonly=True):
        # The best way to a page depends on how common the words are (the text index for rare ones, the
        # newest-first index for common ones), which a cached generic plan cannot know: plan every search.
        await conn.execute(Q["plan_every_search"])
        if ranked:
            rank = after.rank if after else None
            rows = await conn.fetch(
                Q["search_ranked"], q, category, kind, area, rank, after.id if after else "", limit + 1
            )
        else:
            at = after.at if after else None
            rows = await conn.fetch(
                Q["search_newest"], q, category, kind, area, at, after.id if after else "", limit + 1
            )
    items = [_listing(r) for r in rows[:limit]]
    following = None
    if len(rows) > limit:
        last = rows[limit - 1]
        mark = (
            _Cursor("relevance", last["id"], rank=last["rank"])
            if ranked
            else _Cursor("newest", last["id"], at=last["created_at"])
        )
        following = base64.urlsafe_b64encode(msgspec.json.encode(mark)).decode().rstrip("=")
    return ListingPage(items=items, next=following)


def _decode_cursor(cursor: str | None, order: str) -> _Cursor | None:
    if not cursor:
        return None
    try:
        mark = _cursor_decoder.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise Invalid("this cursor is not valid; start again from the first page") from None
    if "\x00" in mark.id:
        raise Invalid("this cursor is not valid; start again from the first page")
    if mark.order != order:
        raise Invalid("this cursor belongs to a search with another order")
    return mark


async def exchanges(conn: Connection, ids: list[str]) -> list[ExchangeView]:
    """Exchanges with their parties and lines, in the order given."""
    if not ids:
        return []
    rows = {r["id"]: r for r in await conn.fetch(Q["exchanges"], ids)}
    return [_exchange(rows[i]) for i in ids if i in rows]


# Each field of a party and of a line, and the array column of the ``exchanges`` query that holds it.
_PARTY_COLUMNS = {"member": "members", "side": "sides", "answer": "answers"}
_LINE_COLUMNS = {
    "n": "ns",
    "provider": "providers",
    "receiver": "receivers",
    "state": "states",
    "minutes": "minutes",
    "transfer": "transfers",
    "ledger_index": "ledger_indexes",
    "settled_at": "settled_ats",
}


def unzip(row: Any, columns: dict[str, str]) -> list[dict[str, Any]]:
    """The rows that parallel array columns of ``row`` hold, each as {field: value}: named, so that a column out of
    place cannot land in another field unnoticed."""
    arrays = {field: row[column] or [] for field, column in columns.items()}
    sizes = {len(values) for values in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"array columns of unequal length: {sorted(columns.values())}")
    count = sizes.pop() if sizes else 0
    return [{field: values[i] for field, values in arrays.items()} for i in range(count)]


def _exchange(row: Any) -> ExchangeView:
    return ExchangeView(
        id=row["id"],
        status=row["status"],
        proposer=row["proposer"],
        listing=row["listing"],
        category=row["category"],
        note=row["note"],
        memo=row["memo"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        parties=[Party(**fields) for fields in unzip(row, _PARTY_COLUMNS)],
        lines=[Line(**fields) for fields in unzip(row, _LINE_COLUMNS)],
    )


async def member_exchanges(conn: Connection, member_id: str, *, open_only: bool, limit: int) -> list[ExchangeView]:
    rows = await conn.fetch(Q["member_exchanges"], member_id, open_only, limit)
    return await exchanges(conn, [r["id"] for r in rows])


async def disputed_exchanges(conn: Connection, limit: int) -> list[ExchangeView]:
    rows = await conn.fetch(Q["disputed_exchanges"], limit)
    return await exchanges(conn, [r["id"] for r in rows])


async def payment(conn: Connection, payment_id: str) -> PaymentView | None:
    row = await conn.fetchrow(Q["payment"], payment_id)
    return None if row is None else _struct(PaymentView, row)


async def member_payments(conn: Connection, member_id: str, limit: int) -> list[PaymentView]:
    return [_struct(PaymentView, r) for r in await conn.fetch(Q["member_payments"], member_id, limit)]


async def memos(conn: Connection, refs: list[str], transfers: list[str]) -> dict[str, str]:
    """Memos still readable: payments' keyed by payment id (``refs``), exchange lines' by ledger transfer id."""
    return {r["ref"]: r["memo"] for r in await conn.fetch(Q["memos_for_refs"], refs, transfers)}


async def pot_account(conn: Connection) -> str | None:
    account: str | None = await conn.fetchval(Q["pot_account"])
    return account


async def impact(conn: Connection, since: datetime, until: datetime) -> list[ImpactRow]:
    return [
        ImpactRow(
            week=r["week"],
            category=r["category"],
            minutes=r["minutes"],
            hours=round(r["minutes"] / 60, 2),
            exchanges=r["exchanges"],
            active_members=r["active_members"],
            members_helped=r["members_helped"],
        )
        for r in await conn.fetch(Q["impact"], since, until)
    ]
