"""Hours moved without an exchange (sending, donating to the community pot, grants from it), and what a member
sees of their own hours: balance, statement with their memos, payments."""

from __future__ import annotations

import hashlib
from typing import Any

from litestar.testing import AsyncTestClient

from services.exchange import events as ev
from services.exchange.app import create_app as create_exchange_app
from services.exchange.eventstore import load
from services.exchange.vault import Vault
from services.node.processes import free_port
from tests.exchange.support import Exchange, Member, exchange_settings
from tests.ledger.support import assert_problem


async def pay(exchange: Exchange, who: Member | None, **body: Any) -> dict[str, Any]:
    """Make a payment and wait for the ledger's answer; returns the payment as its maker sees it."""
    made = await exchange.call("POST", "/api/payments", who, json=body)
    return await exchange.until(  # type: ignore[no-any-return]
        lambda: exchange.call("GET", f"/api/payments/{made['id']}", who),
        lambda view: view["status"] != "pending",
        f"payment {made['id']} to be answered",
    )


async def test_sending_hours_moves_them_between_members_in_the_ledger(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")

    sent = await pay(exchange, ada, to=ben.id, minutes=45, memo="thanks for the soup")

    assert (sent["kind"], sent["payer"], sent["payee"], sent["status"]) == ("send", ada.id, ben.id, "settled")
    [transfer] = await exchange.ledger_transfers(sent["id"])
    assert (transfer["payer"], transfer["payee"], transfer["minutes"]) == (ada.account, ben.account, 45)
    assert (transfer["id"], transfer["index"]) == (sent["transfer"], sent["ledger_index"])
    async with exchange.db() as conn:
        _, [made, *_] = await load(conn, sent["id"])
        assert isinstance(made, ev.PaymentMade)
        memo = await Vault(conn).open(made.memo, ev.Memo)
    assert memo is not None
    assert transfer["memo_digest"] == hashlib.sha256(memo.salt + b"thanks for the soup").hexdigest()
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (-45, 45)
    assert await exchange.call("GET", f"/api/payments/{sent['id']}", ben) == sent


async def test_a_member_cannot_send_hours_to_themselves(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    assert await exchange.refused("POST", "/api/payments", ada, json={"to": ada.id, "minutes": 30}) == 422
    assert await exchange.call("GET", "/api/me/payments", ada) == []


async def test_sending_beyond_the_floor_is_refused_by_the_ledger(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")

    refused = await pay(exchange, ada, to=ben.id, minutes=601)

    assert (refused["status"], refused["transfer"]) == ("refused", None)
    assert await exchange.ledger_transfers(refused["id"]) == []
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (0, 0)


async def test_a_donation_goes_to_the_community_pot(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    pot = await exchange.pot_account()
    before = await exchange.ledger_balance(pot)

    donation = await pay(exchange, ada, kind="donation", minutes=30)

    assert (donation["payee"], donation["status"], donation["memo"]) == ("pot", "settled", "donation to the pot")
    [transfer] = await exchange.ledger_transfers(donation["id"])
    assert (transfer["payer"], transfer["payee"], transfer["minutes"]) == (ada.account, pot, 30)
    assert await exchange.balance(ada) == -30
    assert await exchange.ledger_balance(pot) == before + 30


async def test_a_coordinator_grants_hours_from_the_pot(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    pot = await exchange.pot_account()
    await pay(exchange, ada, kind="donation", minutes=50)
    before = await exchange.ledger_balance(pot)

    grant = await pay(exchange, None, kind="grant", to=ben.id, minutes=40, memo="welcome to the network")

    assert (grant["payer"], grant["payee"], grant["status"]) == ("pot", ben.id, "settled")
    [transfer] = await exchange.ledger_transfers(grant["id"])
    assert (transfer["payer"], transfer["payee"], transfer["minutes"]) == (pot, ben.account, 40)
    assert await exchange.balance(ben) == 40
    assert await exchange.ledger_balance(pot) == before - 40
    statement = await exchange.call("GET", "/api/me/statement", ben)
    assert [(e["delta"], e["memo"]) for e in statement["entries"]] == [(40, "welcome to the network")]


async def test_a_member_cannot_grant_from_the_pot(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    body = {"kind": "grant", "to": ben.id, "minutes": 40}

    assert await exchange.refused("POST", "/api/payments", ada, json=body) == 403
    assert await exchange.call("GET", "/api/me/payments", ben) == []
    assert await exchange.balance(ben) == 0


async def test_a_member_sees_their_balance_and_floor(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    await pay(exchange, ada, to=ben.id, minutes=25)

    balance = await exchange.call("GET", "/api/me/balance", ben)

    assert balance == {"account": ben.account, "balance": 25, "floor": -600, "ceiling": None}


async def test_a_statement_shows_the_members_own_memos_and_nobody_elses(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    repair = await exchange.trade(ada, ben, 90, memo="new brake pads")
    await exchange.exchange_status(repair, ben, "completed")
    gift = await pay(exchange, ben, to=cy.id, minutes=15, memo="for the lemon cake")
    lesson = await exchange.trade(cy, ada, 30, memo="Cy's private lesson")
    await exchange.exchange_status(lesson, ada, "completed")

    statement = await exchange.call("GET", "/api/me/statement", ben)

    assert statement["account"] == ben.account
    assert [(e["delta"], e["balance"], e["exchange_ref"], e["memo"]) for e in statement["entries"]] == [
        (-15, -105, gift["id"], "for the lemon cake"),
        (-90, -90, repair, "new brake pads"),
    ]
    assert {e["counterparty"] for e in statement["entries"]} == {ada.account, cy.account}
    assert await exchange.refused("GET", f"/api/exchanges/{lesson}", ben) == 404
    assert await exchange.refused("GET", f"/api/payments/{gift['id']}", ada) == 404
    ada_memos = [e["memo"] for e in (await exchange.call("GET", "/api/me/statement", ada))["entries"]]
    assert ada_memos == ["Cy's private lesson", "new brake pads"]


async def test_a_member_sees_the_payments_they_made_and_received(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    to_ben = await pay(exchange, ada, to=ben.id, minutes=10)
    to_ada = await pay(exchange, ben, to=ada.id, minutes=5)
    donation = await pay(exchange, ada, kind="donation", minutes=5)

    assert [p["id"] for p in await exchange.call("GET", "/api/me/payments", ada)] == [
        donation["id"],
        to_ada["id"],
        to_ben["id"],
    ]
    assert [p["id"] for p in await exchange.call("GET", "/api/me/payments", ben)] == [to_ada["id"], to_ben["id"]]


async def test_in_a_house_move_each_provider_sees_their_own_memo(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    body = {"providers": [ada.id, ben.id], "receivers": [cy.id], "category": "home_repair"}
    ex = (await exchange.call("POST", "/api/exchanges", cy, json=body))["id"]
    for who in (ada, ben):
        await exchange.call("POST", f"/api/exchanges/{ex}/accept", who)
    await exchange.call("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 180, "memo": "van and driving"})
    await exchange.call("POST", f"/api/exchanges/{ex}/record", ben, json={"minutes": 120, "memo": "carrying boxes"})
    await exchange.call("POST", f"/api/exchanges/{ex}/confirm", cy)
    await exchange.exchange_status(ex, cy, "completed")

    def memos(statement: dict[str, Any]) -> list[tuple[int, str]]:
        return [(e["delta"], e["memo"]) for e in statement["entries"]]

    assert memos(await exchange.call("GET", "/api/me/statement", ada)) == [(180, "van and driving")]
    assert memos(await exchange.call("GET", "/api/me/statement", ben)) == [(120, "carrying boxes")]
    assert sorted(memos(await exchange.call("GET", "/api/me/statement", cy))) == [
        (-180, "van and driving"),
        (-120, "carrying boxes"),
    ]


async def test_reading_hours_while_the_ledger_is_unreachable_is_a_503_and_the_page_says_so(
    exchange: Exchange,
) -> None:
    ada = await exchange.member("Ada")
    # The same exchange (same database), but its ledger address answers nothing.
    app = create_exchange_app(exchange_settings(), database_url=exchange.database_url, ledger_url=dead_url())
    async with AsyncTestClient(app=app) as cut_off:
        for path in ("/api/me/balance", "/api/me/statement"):
            r = await cut_off.get(path, headers=ada.headers)
            body = assert_problem(r, 503, "unavailable")
            assert "the ledger cannot be reached right now" in body["detail"]
        page = await cut_off.get("/me", headers=ada.headers)
        assert page.status_code == 200, page.text
        assert "the ledger cannot be reached right now" in page.text
    assert await exchange.balance(ada) == 0  # with the ledger back, the figures are there


def dead_url() -> str:
    """An address on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
