"""The network's impact figures, for coordinators: per week and category, hours exchanged, exchanges completed,
active members and members who received help."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.exchange.support import Exchange, Member


async def act(exchange: Exchange, ex: str, action: str, who: Member | None = None, **body: Any) -> None:
    await exchange.call("POST", f"/api/exchanges/{ex}/{action}", who, json=body or None)


async def propose_on(exchange: Exchange, who: Member, owner: Member, title: str, category: str) -> str:
    """``who`` proposes an exchange on a new offer of ``owner``'s."""
    listing = await exchange.publish(owner, title, category=category)
    return (await exchange.call("POST", "/api/exchanges", who, json={"listing": listing["id"]}))["id"]  # type: ignore[no-any-return]


async def workshop(exchange: Exchange, provider: Member, receivers: list[Member], minutes: int, category: str) -> str:
    """A group exchange, accepted by all, with the provider's time recorded."""
    body = {"providers": [provider.id], "receivers": [r.id for r in receivers], "category": category}
    ex: str = (await exchange.call("POST", "/api/exchanges", provider, json=body))["id"]
    for receiver in receivers:
        await act(exchange, ex, "accept", receiver)
    await act(exchange, ex, "record", provider, minutes=minutes)
    return ex


async def test_impact_counts_hours_exchanges_and_members_per_week_and_category(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    dee = await exchange.member("Dee")
    settled = [
        await exchange.trade(ada, ben, 60, category="tutoring"),
        await exchange.trade(cy, ben, 30, category="tutoring"),
        await exchange.trade(ada, cy, 45, category="food"),
    ]
    tech = await workshop(exchange, dee, [ada, ben], 90, "tech_help")
    await act(exchange, tech, "confirm", ada)
    await act(exchange, tech, "confirm", ben)
    # Half done: one of two receivers confirmed, so 30 minutes moved but the exchange is not completed.
    language = await workshop(exchange, dee, [ada, cy], 60, "language")
    await act(exchange, language, "confirm", ada)
    # Not counted: a dispute ruled at zero, hours sent outside an exchange, an exchange still proposed.
    dispute = await propose_on(exchange, ben, ada, "Shelves", "home_repair")
    await act(exchange, dispute, "accept", ada)
    await act(exchange, dispute, "record", ada, minutes=120)
    await act(exchange, dispute, "dispute", ben, reason="Not done.")
    await act(exchange, dispute, "resolve", minutes=0)
    await exchange.call("POST", "/api/payments", ada, json={"to": ben.id, "minutes": 20})
    await propose_on(exchange, cy, dee, "Childminding", "childcare")
    for ex in [*settled, tech]:
        await exchange.exchange_status(ex, ben if ex != settled[2] else cy, "completed")
    await exchange.outbox_idle()

    impact = await exchange.call("GET", "/api/impact")

    async with exchange.db() as conn:
        this_week = await conn.fetchval("SELECT date_trunc('week', now())")
    assert impact["weeks"] == 12
    assert {datetime.fromisoformat(row["week"]) for row in impact["rows"]} == {this_week}
    figures = [
        (row["category"], row["minutes"], row["hours"], row["exchanges"], row["active_members"], row["members_helped"])
        for row in impact["rows"]
    ]
    assert figures == [
        ("food", 45, 0.75, 1, 2, 1),
        ("language", 30, 0.5, 0, 2, 1),
        ("tech_help", 90, 1.5, 1, 3, 2),
        ("tutoring", 90, 1.5, 2, 3, 1),
    ]


async def test_members_cannot_read_the_impact_figures(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    assert await exchange.refused("GET", "/api/impact", ada) == 403
