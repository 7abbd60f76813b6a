"""An exchange between neighbours, from proposal to the ledger: who may do what, and what reaches the ledger."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from services.exchange import events as ev
from services.exchange.eventstore import load
from services.exchange.vault import Vault
from tests.exchange.support import Exchange, Member


async def propose(exchange: Exchange, who: Member, **body: Any) -> str:
    return (await exchange.call("POST", "/api/exchanges", who, json=body))["id"]  # type: ignore[no-any-return]


async def act(exchange: Exchange, ex: str, action: str, who: Member | None = None, **body: Any) -> dict[str, Any]:
    return await exchange.call("POST", f"/api/exchanges/{ex}/{action}", who, json=body or None)  # type: ignore[no-any-return]


def sides(view: dict[str, Any]) -> dict[str, str]:
    return {party["member"]: party["side"] for party in view["parties"]}


async def opened_memo(exchange: Exchange, stream: str) -> list[ev.Memo]:
    """The memos sealed in an exchange's (or payment's) events, opened with the exchange's own vault."""
    async with exchange.db() as conn:
        _, history = await load(conn, stream)
        vault = Vault(conn)
        sealed = [e.memo for e in history if isinstance(e, ev.TimeRecorded | ev.PaymentMade)]
        memos = [await vault.open(s, ev.Memo) for s in sealed]
    assert all(memo is not None for memo in memos)
    return [memo for memo in memos if memo is not None]


async def test_on_an_offer_the_listing_member_provides(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    offer = await exchange.publish(ada, "Bike repair", category="home_repair")

    view = await exchange.call("POST", "/api/exchanges", ben, json={"listing": offer["id"], "note": "Saturday?"})

    assert sides(view) == {ada.id: "provider", ben.id: "receiver"}
    assert (view["status"], view["proposer"], view["listing"]) == ("proposed", ben.id, offer["id"])
    assert (view["category"], view["note"]) == ("home_repair", "Saturday?")
    assert [(line["provider"], line["receiver"], line["state"]) for line in view["lines"]] == [(ada.id, ben.id, "open")]


async def test_on_a_request_the_proposer_provides(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    request = await exchange.publish(ada, "Need a lift", kind="request", category="transport")

    view = await exchange.call("POST", "/api/exchanges", ben, json={"listing": request["id"]})

    assert sides(view) == {ben.id: "provider", ada.id: "receiver"}
    assert view["category"] == "transport"


async def test_the_other_side_accepts_and_the_provider_records_the_time(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 30}) == 409

    assert (await act(exchange, ex, "accept", ada))["status"] == "accepted"
    recorded = await act(exchange, ex, "record", ada, minutes=75, memo="brake cables")

    assert recorded["status"] == "recorded"
    assert recorded["memo"] == "brake cables"
    assert [(line["state"], line["minutes"]) for line in recorded["lines"]] == [("recorded", 75)]


async def test_the_proposer_cannot_accept_for_the_other_side(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])

    assert await exchange.refused("POST", f"/api/exchanges/{ex}/accept", ben) == 409
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", ben))["status"] == "proposed"


async def test_a_declined_proposal_ends_the_exchange(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])

    assert (await act(exchange, ex, "decline", ada))["status"] == "declined"
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/accept", ada) == 409
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 30}) == 409


async def test_either_side_can_cancel_before_the_time_is_recorded(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    offer = (await exchange.publish(ada, "Bike repair"))["id"]
    by_proposer = await propose(exchange, ben, listing=offer)
    by_provider = await propose(exchange, ben, listing=offer)
    await act(exchange, by_provider, "accept", ada)

    assert (await act(exchange, by_proposer, "cancel", ben))["status"] == "cancelled"
    assert (await act(exchange, by_provider, "cancel", ada))["status"] == "cancelled"
    assert await exchange.refused("POST", f"/api/exchanges/{by_provider}/record", ada, json={"minutes": 30}) == 409


async def test_an_exchange_cannot_be_cancelled_once_the_time_is_recorded(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    await act(exchange, ex, "accept", ada)
    await act(exchange, ex, "record", ada, minutes=30)

    assert await exchange.refused("POST", f"/api/exchanges/{ex}/cancel", ben) == 409
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/cancel", ada) == 409


async def test_confirmation_posts_one_transfer_with_the_memos_salted_digest(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    assert ada.account
    assert ben.account

    ex = await exchange.trade(ada, ben, 90, memo="new brake pads")

    done = await exchange.exchange_status(ex, ben, "completed")
    [transfer] = await exchange.ledger_transfers(ex)
    [memo] = await opened_memo(exchange, ex)
    assert memo.text == "new brake pads"
    assert transfer["memo_digest"] == hashlib.sha256(memo.salt + b"new brake pads").hexdigest()
    assert (transfer["payer"], transfer["payee"], transfer["minutes"]) == (ben.account, ada.account, 90)
    assert (transfer["id"], transfer["index"]) == (done["lines"][0]["transfer"], done["lines"][0]["ledger_index"])
    assert await exchange.ledger_balance(ada.account) == 90
    assert await exchange.ledger_balance(ben.account) == -90


async def test_confirming_twice_is_a_conflict_and_posts_nothing_more(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await exchange.trade(ada, ben, 45)

    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", ben) == 409
    await exchange.exchange_status(ex, ben, "completed")
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", ben) == 409
    assert len(await exchange.ledger_transfers(ex)) == 1
    assert await exchange.balance(ben) == -45


async def test_two_confirmations_at_once_post_one_transfer(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    await act(exchange, ex, "accept", ada)
    await act(exchange, ex, "record", ada, minutes=50)

    answers = await asyncio.gather(
        *(exchange.client.post(f"/api/exchanges/{ex}/confirm", headers=ben.headers) for _ in range(4))
    )

    assert sorted(r.status_code for r in answers) == [200, 409, 409, 409]
    await exchange.exchange_status(ex, ben, "completed")
    assert len(await exchange.ledger_transfers(ex)) == 1
    assert await exchange.balance(ben) == -50


async def test_an_applicant_can_neither_propose_nor_be_named_in_an_exchange(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    applicant = await exchange.member("Cy", approve=False)
    offer = (await exchange.publish(ada, "Bike repair"))["id"]

    assert await exchange.refused("POST", "/api/exchanges", applicant, json={"listing": offer}) == 403
    body = {"providers": [ada.id], "receivers": [applicant.id]}
    assert await exchange.refused("POST", "/api/exchanges", ada, json=body) == 403


async def test_a_member_cannot_propose_on_their_own_listing_or_to_themselves(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    offer = (await exchange.publish(ada, "Bike repair"))["id"]

    assert await exchange.refused("POST", "/api/exchanges", ada, json={"listing": offer}) == 422
    body = {"providers": [ada.id], "receivers": [ada.id]}
    assert await exchange.refused("POST", "/api/exchanges", ada, json=body) == 422
    assert await exchange.call("GET", "/api/exchanges", ada) == []


async def test_a_member_cannot_act_on_someone_elses_exchange(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    eve = await exchange.member("Eve")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])

    assert await exchange.refused("GET", f"/api/exchanges/{ex}", eve) == 404
    for action in ("accept", "decline", "cancel"):
        assert await exchange.refused("POST", f"/api/exchanges/{ex}/{action}", eve) in (403, 404), action
    await act(exchange, ex, "accept", ada)
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/record", eve, json={"minutes": 600}) in (403, 404)
    await act(exchange, ex, "record", ada, minutes=30)
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", eve) in (403, 404)
    body = {"reason": "never happened"}
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/dispute", eve, json=body) in (403, 404)
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", ben))["status"] == "recorded"


async def test_the_receiver_cannot_record_time(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    await act(exchange, ex, "accept", ada)

    assert await exchange.refused("POST", f"/api/exchanges/{ex}/record", ben, json={"minutes": 60}) == 403
    await act(exchange, ex, "record", ada, minutes=60)
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", ada) == 403


async def test_a_dispute_resolved_by_a_coordinator_posts_the_ruled_minutes(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    await act(exchange, ex, "accept", ada)
    await act(exchange, ex, "record", ada, minutes=240, memo="whole bike rebuilt")

    disputed = await act(exchange, ex, "dispute", ben, reason="It took an hour.")
    assert disputed["status"] == "disputed"
    assert [item["id"] for item in await exchange.call("GET", "/api/exchanges/disputes")] == [ex]
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/resolve", ada, json={"minutes": 240}) == 403
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", ben) == 409

    await act(exchange, ex, "resolve", minutes=60)

    await exchange.exchange_status(ex, ben, "completed")
    [transfer] = await exchange.ledger_transfers(ex)
    assert transfer["minutes"] == 60
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (60, -60)
    assert await exchange.call("GET", "/api/exchanges/disputes") == []


async def test_a_dispute_resolved_with_zero_minutes_posts_nothing(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    ex = await propose(exchange, ben, listing=(await exchange.publish(ada, "Bike repair"))["id"])
    await act(exchange, ex, "accept", ada)
    await act(exchange, ex, "record", ada, minutes=120)
    await act(exchange, ex, "dispute", ben, reason="Nobody came.")

    resolved = await act(exchange, ex, "resolve", minutes=0)

    assert [(line["state"], line["minutes"], line["transfer"]) for line in resolved["lines"]] == [("void", 0, None)]
    await exchange.outbox_idle()
    assert await exchange.ledger_transfers(ex) == []
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (0, 0)
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/resolve", json={"minutes": 60}) == 409


async def test_a_receiver_past_their_floor_is_refused_until_a_coordinator_resolves_after_a_grant(
    exchange: Exchange,
) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    assert (await exchange.call("GET", "/api/me/balance", ben))["floor"] == -600

    ex = await exchange.trade(ada, ben, 700, memo="garden cleared")

    refused = await exchange.exchange_status(ex, ben, "refused")
    assert refused["lines"][0]["transfer"] is None
    assert await exchange.ledger_transfers(ex) == []
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (0, 0)
    assert [item["id"] for item in await exchange.call("GET", "/api/exchanges/disputes")] == [ex]

    await exchange.call("POST", "/api/payments", cy, json={"kind": "donation", "minutes": 100})
    grant = await exchange.call("POST", "/api/payments", json={"kind": "grant", "to": ben.id, "minutes": 100})
    await exchange.until(
        lambda: exchange.call("GET", f"/api/payments/{grant['id']}", ben),
        lambda view: view["status"] == "settled",
        "the grant to settle",
    )
    await act(exchange, ex, "resolve", minutes=700)

    await exchange.exchange_status(ex, ben, "completed")
    [transfer] = await exchange.ledger_transfers(ex)
    assert transfer["minutes"] == 700
    assert (await exchange.balance(ada), await exchange.balance(ben)) == (700, -600)


async def test_a_workshop_splits_the_minutes_and_each_receiver_confirms_their_own_line(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    dee = await exchange.member("Dee")
    ex = await propose(exchange, ada, providers=[ada.id], receivers=[ben.id, cy.id, dee.id], category="tech_help")
    await act(exchange, ex, "accept", ben)
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", ada))["status"] == "proposed"
    await act(exchange, ex, "accept", cy)
    await act(exchange, ex, "accept", dee)

    recorded = await act(exchange, ex, "record", ada, minutes=100, memo="phone security workshop")
    assert {line["receiver"]: line["minutes"] for line in recorded["lines"]} == {ben.id: 34, cy.id: 33, dee.id: 33}
    await act(exchange, ex, "confirm", ben)
    await act(exchange, ex, "confirm", cy)
    await exchange.until(
        lambda: exchange.call("GET", f"/api/exchanges/{ex}", ada),
        lambda view: sum(line["state"] == "settled" for line in view["lines"]) == 2,
        "two lines to settle",
    )
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", dee))["status"] == "recorded"
    await act(exchange, ex, "confirm", dee)

    done = await exchange.exchange_status(ex, dee, "completed")
    transfers = await exchange.ledger_transfers(ex)
    assert sorted(t["id"] for t in transfers) == sorted(line["transfer"] for line in done["lines"])
    assert {(t["payer"], t["minutes"]) for t in transfers} == {(ben.account, 34), (cy.account, 33), (dee.account, 33)}
    assert {t["payee"] for t in transfers} == {ada.account}
    [memo] = await opened_memo(exchange, ex)
    assert {t["memo_digest"] for t in transfers} == {hashlib.sha256(memo.salt + memo.text.encode()).hexdigest()}
    assert [await exchange.balance(m) for m in (ada, ben, cy, dee)] == [100, -34, -33, -33]


async def test_a_receiver_who_declines_a_workshop_is_left_out_of_the_split(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    ex = await propose(exchange, ada, providers=[ada.id], receivers=[ben.id, cy.id], category="language")
    await act(exchange, ex, "decline", cy)
    assert (await act(exchange, ex, "accept", ben))["status"] == "accepted"

    recorded = await act(exchange, ex, "record", ada, minutes=60)
    assert {line["receiver"]: (line["state"], line["minutes"]) for line in recorded["lines"]} == {
        ben.id: ("recorded", 60),
        cy.id: ("declined", 0),
    }
    assert await exchange.refused("POST", f"/api/exchanges/{ex}/confirm", cy) == 409
    await act(exchange, ex, "confirm", ben)

    await exchange.exchange_status(ex, ben, "completed")
    assert [(t["payer"], t["minutes"]) for t in await exchange.ledger_transfers(ex)] == [(ben.account, 60)]
    assert [await exchange.balance(m) for m in (ada, ben, cy)] == [60, -60, 0]


async def test_a_house_move_pays_each_provider_their_own_minutes(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cy = await exchange.member("Cy")
    ex = await propose(exchange, cy, providers=[ada.id, ben.id], receivers=[cy.id], category="home_repair")
    await act(exchange, ex, "accept", ada)
    await act(exchange, ex, "accept", ben)

    await act(exchange, ex, "record", ada, minutes=180, memo="van and driving")
    await act(exchange, ex, "record", ben, minutes=120, memo="carrying boxes")
    confirmed = await act(exchange, ex, "confirm", cy)

    assert {line["provider"]: line["minutes"] for line in confirmed["lines"]} == {ada.id: 180, ben.id: 120}
    await exchange.exchange_status(ex, cy, "completed")
    transfers = await exchange.ledger_transfers(ex)
    assert {(t["payee"], t["minutes"]) for t in transfers} == {(ada.account, 180), (ben.account, 120)}
    assert {t["payer"] for t in transfers} == {cy.account}
    memos = {m.text: m.salt for m in await opened_memo(exchange, ex)}
    digests = {t["payee"]: t["memo_digest"] for t in transfers}
    assert digests[ada.account] == hashlib.sha256(memos["van and driving"] + b"van and driving").hexdigest()
    assert digests[ben.account] == hashlib.sha256(memos["carrying boxes"] + b"carrying boxes").hexdigest()
    assert [await exchange.balance(m) for m in (ada, ben, cy)] == [180, 120, -300]


async def test_a_member_sees_their_open_exchanges_and_what_needs_their_action(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    offer = (await exchange.publish(ada, "Bike repair"))["id"]
    to_answer = await propose(exchange, ben, listing=offer)
    to_record = await propose(exchange, ben, listing=offer)
    await act(exchange, to_record, "accept", ada)
    to_confirm = await propose(exchange, ben, listing=offer)
    await act(exchange, to_confirm, "accept", ada)
    await act(exchange, to_confirm, "record", ada, minutes=20)
    finished = await exchange.trade(ada, ben, 10)
    await exchange.exchange_status(finished, ben, "completed")

    def actions(view: dict[str, Any]) -> dict[str, list[str]]:
        return {key: [ex["id"] for ex in items] for key, items in view.items()}

    assert actions(await exchange.call("GET", "/api/me/actions", ada)) == {
        "to_answer": [to_answer],
        "to_record": [to_record],
        "to_confirm": [],
        "waiting_for_others": [to_confirm],
    }
    assert actions(await exchange.call("GET", "/api/me/actions", ben)) == {
        "to_answer": [],
        "to_record": [],
        "to_confirm": [to_confirm],
        "waiting_for_others": [to_record, to_answer],
    }
    open_ones = await exchange.call("GET", "/api/exchanges", ben, params={"open": "true"})
    assert {ex["id"] for ex in open_ones} == {to_answer, to_record, to_confirm}
    every = await exchange.call("GET", "/api/exchanges", ben)
    assert {ex["id"] for ex in every} == {to_answer, to_record, to_confirm, finished}
