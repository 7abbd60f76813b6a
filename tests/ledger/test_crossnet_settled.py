"""Minutes in flight over HTTP: our payments to a neighbour's members count as settled only once the federation
records the neighbour's acceptance in our log, and only the federation undoes one the neighbour rejected.

The ledger under test plays network A: it pays members of its neighbour (``NEIGHBOUR``) through its clearing account
for it (trust limit 300 minutes), and decides the neighbour's payments to its members.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from services.ledger.app import create_app
from services.ledger.entries import CrossnetAccepted, entry_decoder, transfer_id
from tests.ledger.conftest import Ledger, auth, ledger_settings
from tests.ledger.support import assert_problem, entries, log_state

NEIGHBOUR = "timebank.test/hillside"
REMOTE_MEMBER = "acct_" + "b" * 20


async def network(ledger: Ledger) -> dict[str, str]:
    """Alice, and the clearing account for the neighbour (floor -300)."""
    return {
        "alice": str((await ledger.open_account("alice"))["id"]),
        "peer": str((await ledger.open_account("peer", kind="peer", peer=NEIGHBOUR, floor=-300))["id"]),
    }


async def pay_out(ledger: Ledger, accounts: dict[str, str], minutes: int, key: str = "out") -> dict[str, Any]:
    r = await ledger.transfer(key, accounts["alice"], accounts["peer"], minutes, remote_payee=REMOTE_MEMBER)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def record(
    client: httpx.AsyncClient, transfer: str, index: int = 41, role: str | None = "federation", origin: str = NEIGHBOUR
) -> httpx.Response:
    body = {"origin": origin, "transfer": transfer, "index": index}
    return await client.post("/crossnet/acceptances", json=body, headers={} if role is None else auth(role))


async def reverse_rejected(
    client: httpx.AsyncClient, transfer: str, key: str = "back", role: str | None = "federation"
) -> httpx.Response:
    body = {"key": key, "origin": NEIGHBOUR, "transfer": transfer, "index": 40}
    return await client.post("/crossnet/reversals", json=body, headers={} if role is None else auth(role))


async def decide_incoming(client: httpx.AsyncClient, payee: str, minutes: int, key: str) -> dict[str, Any]:
    body = {"origin": NEIGHBOUR, "transfer": transfer_id(key), "index": 7, "payee": payee, "minutes": minutes}
    r = await client.post("/crossnet/decisions", json=body, headers=auth("federation"))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_payment_in_flight_is_no_credit_until_its_acceptance_is_recorded(ledger: Ledger) -> None:
    accounts = await network(ledger)
    sent = await pay_out(ledger, accounts, 100)
    refused = await decide_incoming(ledger.client, accounts["alice"], 400, "b1")
    assert (refused["decision"], refused["reason"]) == ("rejected", "trust_limit")

    r = await record(ledger.client, sent["id"])
    assert r.status_code == 201, r.text
    view = r.json()
    assert {k: view[k] for k in ("origin", "transfer", "decision_index", "replayed")} == {
        "origin": NEIGHBOUR,
        "transfer": sent["id"],
        "decision_index": 41,
        "replayed": False,
    }
    logged = entry_decoder.decode((await entries(ledger.client))[view["index"]])
    assert logged == CrossnetAccepted(at=logged.at, origin=NEIGHBOUR, transfer=sent["id"], index=41)
    assert (await ledger.balance(accounts["peer"]), await ledger.balance(accounts["alice"])) == (100, -100)

    accepted = await decide_incoming(ledger.client, accounts["alice"], 400, "b2")  # 100 settled - 400 = -300
    assert accepted["decision"] == "accepted"
    assert await ledger.balance(accounts["peer"]) == -300


async def test_a_restarted_ledger_still_counts_the_minutes_in_flight(ledger: Ledger) -> None:
    """Minutes in flight are read back from the database by a ledger that has cached nothing."""
    accounts = await network(ledger)
    sent = await pay_out(ledger, accounts, 100)
    again = create_app(ledger_settings(), database_url=ledger.database_url, signer=ledger.signer)
    async with AsyncTestClient(app=again) as client:
        refused = await decide_incoming(client, accounts["alice"], 400, "b1")
        assert (refused["decision"], refused["reason"]) == ("rejected", "trust_limit")
        assert (await record(client, sent["id"])).status_code == 201
    again = create_app(ledger_settings(), database_url=ledger.database_url, signer=ledger.signer)
    async with AsyncTestClient(app=again) as client:
        assert (await decide_incoming(client, accounts["alice"], 400, "b2"))["decision"] == "accepted"


async def test_recording_an_acceptance_again_is_a_replay_and_for_another_decision_a_conflict(ledger: Ledger) -> None:
    accounts = await network(ledger)
    sent = await pay_out(ledger, accounts, 100)
    first = (await record(ledger.client, sent["id"])).json()
    before = await log_state(ledger.client)
    again = await record(ledger.client, sent["id"])
    assert again.status_code == 200, again.text
    assert again.json() == {**first, "replayed": True}
    assert_problem(await record(ledger.client, sent["id"], index=42), 409, "conflict")
    assert await log_state(ledger.client) == before


async def test_an_acceptance_is_recorded_only_for_our_payment_to_that_neighbour_still_in_flight(
    ledger: Ledger,
) -> None:
    accounts = await network(ledger)
    await ledger.open_account("other-peer", kind="peer", peer="timebank.test/lakeside", floor=-300)
    carol = str((await ledger.open_account("carol"))["id"])
    local = (await ledger.transfer("local", accounts["alice"], carol, 5)).json()
    sent = await pay_out(ledger, accounts, 100)
    rejected = await pay_out(ledger, accounts, 10, key="rejected")
    assert (await reverse_rejected(ledger.client, rejected["id"])).status_code == 201
    before = await log_state(ledger.client)
    assert_problem(await record(ledger.client, transfer_id("never")), 404, "not-found")
    assert_problem(await record(ledger.client, local["id"]), 422, "invalid")
    assert_problem(await record(ledger.client, sent["id"], origin="timebank.test/lakeside"), 422, "invalid")
    assert_problem(await record(ledger.client, rejected["id"]), 409, "conflict")
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("auditor", 403), ("service", 403), ("coordinator", 403)])
async def test_only_the_federation_records_acceptances_and_reverses_rejected_payments(
    ledger: Ledger, role: str | None, status: int
) -> None:
    accounts = await network(ledger)
    sent = await pay_out(ledger, accounts, 100)
    before = await log_state(ledger.client)
    assert_problem(await record(ledger.client, sent["id"], role=role), status)
    assert_problem(await reverse_rejected(ledger.client, sent["id"], role=role), status)
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize("role", ["coordinator", "service", "federation"])
async def test_no_plain_reversal_undoes_a_payment_to_a_neighbour(ledger: Ledger, role: str) -> None:
    """Reversed while in flight, it would be paid twice if the neighbour then accepted it."""
    accounts = await network(ledger)
    sent = await pay_out(ledger, accounts, 100)
    before = await log_state(ledger.client)
    r = await ledger.client.post(f"/transfers/{sent['id']}/reversal", json={"key": "undo"}, headers=auth(role))
    assert_problem(r, 403, "forbidden")
    assert await log_state(ledger.client) == before


async def test_the_federation_reverses_a_rejected_payment_once_but_never_an_accepted_one(ledger: Ledger) -> None:
    accounts = await network(ledger)
    rejected = await pay_out(ledger, accounts, 30, key="rejected")
    accepted = await pay_out(ledger, accounts, 20, key="accepted")
    back = await reverse_rejected(ledger.client, rejected["id"])
    assert back.status_code == 201, back.text
    assert (back.json()["reverses"], back.json()["payee"]) == (rejected["id"], accounts["alice"])
    again = await reverse_rejected(ledger.client, rejected["id"])
    assert again.status_code == 200, again.text
    assert again.json() == {**back.json(), "replayed": True}
    assert (await record(ledger.client, accepted["id"])).status_code == 201
    before = await log_state(ledger.client)
    assert_problem(await reverse_rejected(ledger.client, accepted["id"], key="back2"), 409, "conflict")
    assert await log_state(ledger.client) == before
    assert await ledger.balance(accounts["alice"]) == -20
