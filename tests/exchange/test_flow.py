"""The whole trade, as two neighbours live it: offer, proposal, acceptance, time, confirmation, ledger."""

from __future__ import annotations

from tests.exchange.support import Exchange


async def test_an_exchange_on_an_offer_settles_once_in_the_ledger(exchange: Exchange) -> None:
    ada = await exchange.member("Ada", skills=["bike repair"], area="Riverside")
    ben = await exchange.member("Ben", area="Riverside")
    listing = await exchange.call(
        "POST",
        "/api/listings",
        ada,
        json={"kind": "offer", "category": "home_repair", "title": "Bike repair", "description": "Brakes, gears."},
    )
    found = await exchange.call("GET", "/api/listings?q=brakes", ben)
    assert [item["id"] for item in found["items"]] == [listing["id"]]

    proposed = await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"], "note": "Sat?"})
    ex = proposed["id"]
    assert proposed["status"] == "proposed"
    await exchange.call("POST", f"/api/exchanges/{ex}/accept", ada)
    await exchange.call("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 90, "memo": "new brake pads"})
    confirmed = await exchange.call("POST", f"/api/exchanges/{ex}/confirm", ben)
    assert confirmed["status"] in ("confirmed", "completed")

    done = await exchange.exchange_status(ex, ben, "completed")
    assert done["lines"][0]["transfer"].startswith("tr_")
    assert await exchange.balance(ada) == 90
    assert await exchange.balance(ben) == -90
    statement = await exchange.call("GET", "/api/me/statement", ben)
    assert statement["entries"][0]["memo"] == "new brake pads"
    assert statement["entries"][0]["delta"] == -90
