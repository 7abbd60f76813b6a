"""Offers and requests as members list them: what a listing holds, and who may edit, pause, resume or withdraw it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.exchange.support import Exchange, Member

CATEGORIES = [
    "food",
    "transport",
    "childcare",
    "care_and_health",
    "home_repair",
    "tutoring",
    "tech_help",
    "admin_and_paperwork",
    "language",
    "company_and_listening",
    "other",
]


async def found(exchange: Exchange, who: Member, query: str = "") -> list[str]:
    """Ids of the listings a search shows ``who`` (first page, newest first)."""
    page = await exchange.call("GET", "/api/listings", who, params={"q": query, "order": "newest", "limit": 100})
    return [item["id"] for item in page["items"]]


async def test_a_listing_keeps_everything_its_member_gave(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    expires = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    body: dict[str, Any] = {
        "kind": "request",
        "category": "care_and_health",
        "title": "Lift to the clinic",
        "description": "Tuesday mornings, wheelchair fits in a hatchback.",
        "area": "Riverside",
        "availability": "Tuesdays 9-11",
        "expires": expires.isoformat(),
        "shared": True,
    }
    created = await exchange.call("POST", "/api/listings", ada, json=body)
    read = await exchange.call("GET", f"/api/listings/{created['id']}", ada)

    assert read == created
    for field in ("kind", "category", "title", "description", "area", "availability", "shared"):
        assert read[field] == body[field], field
    assert datetime.fromisoformat(read["expires"]) == expires
    assert read["status"] == "active"
    assert read["member"] == ada.id
    assert read["member_name"] == "Ada"
    assert read["network"] is None


async def test_every_category_can_be_listed_and_filtered(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ids = {c: (await exchange.publish(ada, f"Listing in {c}", category=c))["id"] for c in CATEGORIES}
    for category, listing in ids.items():
        page = await exchange.call("GET", "/api/listings", ada, params={"category": category})
        assert [item["id"] for item in page["items"]] == [listing], category


async def test_an_unknown_category_is_refused(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    body = {"kind": "offer", "category": "astrology", "title": "Horoscopes", "description": "Weekly."}
    assert await exchange.refused("POST", "/api/listings", ada, json=body) == 400


async def test_a_listing_expires_after_the_default_period_unless_given(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    listing = await exchange.publish(ada, "Soup on Sundays", category="food")
    created = datetime.fromisoformat(listing["created_at"])
    assert datetime.fromisoformat(listing["expires"]) - created == timedelta(days=90)


async def test_only_the_owner_edits_a_listing(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = (await exchange.publish(ada, "Bike repair", "Brakes and gears."))["id"]

    assert await exchange.refused("PATCH", f"/api/listings/{listing}", ben, json={"title": "Free bikes"}) == 403
    assert await exchange.refused("PATCH", f"/api/listings/{listing}", json={"title": "Free bikes"}) == 403
    edited = await exchange.call(
        "PATCH", f"/api/listings/{listing}", ada, json={"title": "Scooter repair", "category": "home_repair"}
    )

    assert edited["title"] == "Scooter repair"
    assert edited["category"] == "home_repair"
    assert edited["description"] == "Brakes and gears."
    assert await found(exchange, ben, "scooter") == [listing]
    assert await found(exchange, ben, "bike") == []
    assert await found(exchange, ben, "free") == []


async def test_an_edit_can_clear_the_area_and_availability(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    listing = (await exchange.publish(ada, "Dog walks", area="Riverside", availability="Evenings"))["id"]

    edited = await exchange.call("PATCH", f"/api/listings/{listing}", ada, json={"area": "", "availability": ""})

    assert (edited["area"], edited["availability"]) == ("", "")


async def test_a_paused_listing_leaves_search_until_resumed(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = (await exchange.publish(ada, "Guitar lessons", category="tutoring"))["id"]

    paused = await exchange.call("POST", f"/api/listings/{listing}/pause", ada)
    assert paused["status"] == "paused"
    assert listing not in await found(exchange, ben)
    assert await exchange.refused("POST", "/api/exchanges", ben, json={"listing": listing}) == 409
    mine = await exchange.call("GET", "/api/listings/mine", ada)
    assert [(item["id"], item["status"]) for item in mine] == [(listing, "paused")]

    resumed = await exchange.call("POST", f"/api/listings/{listing}/resume", ada)
    assert resumed["status"] == "active"
    assert await found(exchange, ben) == [listing]


async def test_another_member_cannot_pause_or_withdraw_a_listing(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = (await exchange.publish(ada, "Guitar lessons"))["id"]

    assert await exchange.refused("POST", f"/api/listings/{listing}/pause", ben) == 403
    assert await exchange.refused("POST", f"/api/listings/{listing}/withdraw", ben) == 403
    assert await found(exchange, ben) == [listing]


async def test_a_withdrawn_listing_is_gone(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = (await exchange.publish(ada, "Guitar lessons"))["id"]

    withdrawn = await exchange.call("POST", f"/api/listings/{listing}/withdraw", ada)

    assert withdrawn["status"] == "withdrawn"
    assert await found(exchange, ben) == []
    assert await exchange.refused("GET", f"/api/listings/{listing}", ben) == 404
    assert await exchange.refused("POST", "/api/exchanges", ben, json={"listing": listing}) == 409
    assert await exchange.refused("POST", f"/api/listings/{listing}/resume", ada) == 409


async def test_a_coordinator_withdraws_a_listing_for_moderation(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = (await exchange.publish(ada, "Miracle cures", category="care_and_health"))["id"]

    await exchange.call("POST", f"/api/listings/{listing}/withdraw")

    assert await found(exchange, ben) == []
    assert await exchange.refused("GET", f"/api/listings/{listing}", ada) == 404


async def test_an_expired_listing_leaves_search(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    expires = datetime.now(UTC) + timedelta(seconds=2)
    listing = (await exchange.publish(ada, "Plums to pick", category="food", expires=expires.isoformat()))["id"]
    assert await found(exchange, ben, "plums") == [listing]

    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)

    assert await found(exchange, ben, "plums") == []
    assert await found(exchange, ben) == []
    assert await exchange.refused("POST", "/api/exchanges", ben, json={"listing": listing}) == 409


async def test_an_expiry_in_the_past_is_refused(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = {"kind": "offer", "category": "food", "title": "Jam", "description": "Plum.", "expires": past}
    assert await exchange.refused("POST", "/api/listings", ada, json=body) == 422


async def test_an_unapproved_member_cannot_list(exchange: Exchange) -> None:
    applicant = await exchange.member("Cy", approve=False)
    body = {"kind": "offer", "category": "food", "title": "Jam", "description": "Plum."}
    assert await exchange.refused("POST", "/api/listings", applicant, json=body) == 403
    assert await found(exchange, applicant) == []
