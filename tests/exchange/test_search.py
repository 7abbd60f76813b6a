"""Finding a neighbour: full-text search in PostgreSQL, filters, newest first, and pages with stable cursors."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.exchange.support import Exchange, Member

NEIGHBOUR = "timebank.test/hillside"


async def search(exchange: Exchange, who: Member, **params: Any) -> dict[str, Any]:
    return await exchange.call("GET", "/api/listings", who, params=params)  # type: ignore[no-any-return]


async def ids(exchange: Exchange, who: Member, **params: Any) -> list[str]:
    return [item["id"] for item in (await search(exchange, who, limit=100, **params))["items"]]


async def walk(exchange: Exchange, who: Member, between: Any = None, **params: Any) -> list[str]:
    """Every page of a search, following ``next``; ``between()`` runs after each page is fetched."""
    seen: list[str] = []
    cursor = None
    while True:
        page = await search(exchange, who, **params, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            return seen
        if between is not None:
            await between()


async def test_a_title_match_outranks_a_description_only_match(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    in_title = await exchange.publish(ada, "Piano lessons", "Beginners welcome, any age.", category="tutoring")
    in_description = await exchange.publish(ada, "Music theory", "Scales and harmony at the piano.")
    await exchange.publish(ada, "Guitar lessons", "Acoustic only.")

    assert await ids(exchange, ada, q="piano") == [in_title["id"], in_description["id"]]


async def test_search_matches_other_forms_of_a_word(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    listing = await exchange.publish(ada, "Bike repairs", "I repaired hundreds of bicycles.")

    assert await ids(exchange, ada, q="repairing") == [listing["id"]]
    assert await ids(exchange, ada, q="bikes") == [listing["id"]]
    assert await ids(exchange, ada, q="sewing") == []


async def test_search_filters_by_category_area_and_kind(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    tutoring_here = await exchange.publish(ada, "Maths help", category="tutoring", area="Riverside")
    tutoring_there = await exchange.publish(ada, "Maths help too", category="tutoring", area="Hillside")
    food_here = await exchange.publish(ada, "Soup", category="food", area="Riverside")
    request_here = await exchange.publish(ada, "Need maths help", kind="request", category="tutoring", area="Riverside")

    assert set(await ids(exchange, ada, category="tutoring")) == {
        tutoring_here["id"],
        tutoring_there["id"],
        request_here["id"],
    }
    assert set(await ids(exchange, ada, area="riverside")) == {tutoring_here["id"], food_here["id"], request_here["id"]}
    assert await ids(exchange, ada, kind="request") == [request_here["id"]]
    assert await ids(exchange, ada, category="tutoring", area="Riverside", kind="offer") == [tutoring_here["id"]]
    assert await ids(exchange, ada, q="maths", area="Hillside") == [tutoring_there["id"]]


async def test_without_a_query_the_newest_come_first(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    published = [(await exchange.publish(ada, f"Listing {n}"))["id"] for n in range(4)]

    assert await ids(exchange, ada) == published[::-1]


async def test_walking_the_pages_shows_every_listing_once_in_order_while_others_are_published(
    exchange: Exchange,
) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    published = [(await exchange.publish(ada, f"Listing {n}"))["id"] for n in range(11)]
    newer: list[str] = []

    async def publish_more() -> None:
        newer.append((await exchange.publish(ada, f"Newer listing {len(newer)}"))["id"])

    seen = await walk(exchange, ben, publish_more, limit=3)

    assert seen == published[::-1]
    assert len(newer) == 3
    # A new search starts with what was published meanwhile.
    assert await ids(exchange, ben) == [*newer[::-1], *published[::-1]]


async def test_walking_ranked_pages_shows_every_match_once_in_rank_order(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    for n in range(4):
        await exchange.publish(ada, f"Garden help {n}", "Weeding and mowing.")
        await exchange.publish(ada, f"Odd jobs {n}", "Garden, shed, fences.")
        await exchange.publish(ada, f"Garden garden {n}", "Garden work of every kind.")
    ranked = await ids(exchange, ben, q="garden")
    assert len(ranked) == 12

    async def publish_more() -> None:
        await exchange.publish(ada, "Garden tools to lend", "Spades and a garden fork.")

    seen = await walk(exchange, ben, publish_more, q="garden", limit=5)

    assert [listing for listing in seen if listing in ranked] == ranked


async def test_a_bad_cursor_is_refused(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    for n in range(3):
        await exchange.publish(ada, f"Garden help {n}")
    newest = (await search(exchange, ada, limit=1))["next"]
    assert newest is not None
    junk = base64.urlsafe_b64encode(b'{"not": "a cursor"}').decode()

    for cursor in ("not a cursor!", junk, "é"):
        assert await exchange.refused("GET", "/api/listings", ada, params={"cursor": cursor}) == 422, cursor
    # A cursor from the newest-first order cannot continue a ranked search.
    params = {"q": "garden", "cursor": newest}
    assert await exchange.refused("GET", "/api/listings", ada, params=params) == 422


async def test_a_listing_from_a_neighbouring_network_shows_marked_with_its_network(exchange: Exchange) -> None:
    """There is no federation yet: the neighbour's listing is written into the read model as federation will
    write it (no member of ours, the neighbour's origin in ``network``)."""
    ada = await exchange.member("Ada")
    ours = await exchange.publish(ada, "Bread baking", "Sourdough on Saturdays.", category="food")
    theirs = f"lst_{secrets.token_hex(8)}"
    at = datetime.now(UTC)
    async with exchange.db() as conn:
        await conn.execute(
            """INSERT INTO exchange.listings (id, member, network, kind, category, title, description, area, status,
                                              expires, created_at, updated_at)
               VALUES ($1, NULL, $2, 'offer', 'food', 'Bread and jam', 'Rye bread from the hill.', 'Hillside',
                       'active', $3, $4, $4)""",
            theirs,
            NEIGHBOUR,
            at + timedelta(days=30),
            at,
        )

    page = await search(exchange, ada, q="bread")

    by_id = {item["id"]: item for item in page["items"]}
    assert set(by_id) == {ours["id"], theirs}
    assert by_id[theirs]["network"] == NEIGHBOUR
    assert by_id[theirs]["member"] is None
    assert by_id[ours["id"]]["network"] is None
    assert await ids(exchange, ada, category="food", area="Hillside") == [theirs]
