"""The exchange's public seam for shared offers: what the federation may publish of our listings, and where it
puts our neighbours' (among our listings, so that search finds them).

The federation calls these with a connection to the node's database, as it reads the ledger's log schema through
``services/ledger/entries.py``: the exchange keeps owning its tables and its SQL, and this module is the only
door to them. It imports msgspec, ``shared.db`` and the exchange's event schema only, so the federation does not
pull in the exchange's web layer or domain.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from services.exchange.events import CATEGORIES
from shared.db import Connection, load_queries

Q = load_queries(Path(__file__).with_name("neighbour_offers.sql"))

# What a neighbour's offer may be filed under here; anything else (a newer neighbour's) is shown as "other".
KINDS = ("offer", "request")


class SharedListing(msgspec.Struct, frozen=True, kw_only=True):
    """One of our listings as the federation may publish it: ``shown`` False means a tombstone (not shared, not
    active, expired, or its member no longer approved); ``seq`` is the last event that touched it."""

    seq: int
    listing: str
    shown: bool
    kind: str
    category: str
    title: str
    description: str
    area: str
    member_name: str
    expires: datetime


class ReceivedOffer(msgspec.Struct, frozen=True, kw_only=True):
    """A neighbour's offer, verified by the federation, to show in our search."""

    origin: str
    # The neighbour's NATS name: unique among our peers, it keeps its listing ids apart from ours.
    network: str
    listing: str
    seq: int
    kind: str
    category: str
    title: str
    description: str
    area: str
    member_name: str
    expires: datetime


def local_id(network: str, listing: str) -> str:
    """The id a neighbour's listing has here (ours never hold ``@``, so no neighbour can overwrite one of ours)."""
    return f"{listing}@{network}"


async def ready(conn: Connection) -> bool:
    """Whether the exchange's tables for shared offers exist (the exchange may not run on this node, or not yet)."""
    return bool(await conn.fetchval(Q["schema_ready"]))


async def head(conn: Connection) -> int:
    """The position of our newest event, of any kind."""
    return int(await conn.fetchval(Q["head"]))


async def changes(conn: Connection, after: int, limit: int) -> list[SharedListing]:
    """Our listings touched since position ``after``, oldest change first, at most ``limit``."""
    rows = await conn.fetch(Q["changes"], after, limit)
    return [msgspec.convert(dict(r), SharedListing) for r in rows]


async def store(conn: Connection, offer: ReceivedOffer) -> None:
    """Show a neighbour's offer (or its later value); an earlier value than the one shown changes nothing."""
    await conn.execute(
        Q["store_offer"],
        local_id(offer.network, offer.listing),
        offer.origin,
        offer.kind if offer.kind in KINDS else "offer",
        offer.category if offer.category in CATEGORIES else "other",
        offer.title,
        offer.description,
        offer.area,
        offer.expires,
        offer.member_name,
        offer.seq,
    )


async def remove(conn: Connection, origin: str, network: str, listing: str) -> None:
    """A neighbour's tombstone: its offer leaves our search."""
    await conn.execute(Q["remove_offer"], local_id(network, listing), origin)


async def hide(conn: Connection, origin: str) -> None:
    """Take a neighbour's offers out of search, kept for when it is trusted again (open fork evidence)."""
    await conn.execute(Q["hide_network"], origin)


async def show(conn: Connection, origin: str) -> None:
    """Bring a neighbour's hidden offers back into search (its evidence was resolved)."""
    await conn.execute(Q["show_network"], origin)


async def forget(conn: Connection, origin: str) -> None:
    """Drop every offer of a neighbour that is no longer our peer."""
    await conn.execute(Q["forget_network"], origin)
