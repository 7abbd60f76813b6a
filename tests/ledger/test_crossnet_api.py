"""Cross-network trades over HTTP, as the federation service and a neighbour's auditor see them.

The ledger under test plays network B (``ORIGIN`` of conftest): it holds a clearing account for its neighbour A and
decides A's transfers to its members. Outgoing transfers are checked against a clearing account for A too.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from services.ledger.entries import CrossnetRejected, Remote, Transfer, crossnet_transfer_id, entry_decoder, transfer_id
from tests.ledger.conftest import Ledger, auth
from tests.ledger.support import assert_problem, entries, log_state

NEIGHBOUR = "timebank.test/hillside"
REMOTE_MEMBER = "acct_" + "b" * 20
UNKNOWN_ACCOUNT = "acct_" + "0" * 20
SENT = transfer_id("hillside's key")  # the neighbour's transfer id (the format is shared by every network)


async def network(ledger: Ledger, trust_limit: int = 300) -> dict[str, str]:
    """The clearing account for the neighbour (floor = -trust limit) and the local accounts it may pay."""
    names = {
        "peer": await ledger.open_account("peer", kind="peer", peer=NEIGHBOUR, floor=-trust_limit),
        "bob": await ledger.open_account("bob"),
        "capped": await ledger.open_account("capped", ceiling=100),
        "pot": await ledger.open_account("pot", kind="community"),
        "closed": await ledger.open_account("closed"),
    }
    r = await ledger.client.post(f"/accounts/{names['closed']['id']}/close", headers=auth("coordinator"))
    assert r.status_code == 200, r.text
    return {name: str(account["id"]) for name, account in names.items()}


async def decide(
    ledger: Ledger,
    payee: str,
    minutes: int,
    *,
    transfer: str = SENT,
    index: int = 17,
    origin: str = NEIGHBOUR,
    headers: dict[str, str] | None = None,
    **fields: object,
) -> httpx.Response:
    body = {"origin": origin, "transfer": transfer, "index": index, "payee": payee, "minutes": minutes, **fields}
    return await ledger.client.post(
        "/crossnet/decisions", json=body, headers=auth("federation") if headers is None else headers
    )


async def read_decision(ledger: Ledger, transfer: str = SENT, origin: str = NEIGHBOUR) -> httpx.Response:
    return await ledger.client.get(f"/crossnet/decisions/{origin}/{transfer}")  # public: no token


async def last_entry(ledger: Ledger) -> Any:
    return entry_decoder.decode((await entries(ledger.client))[-1])


# ---------------------------------------------------------------------------------------------- outgoing


async def test_transfer_to_a_peer_account_records_the_remote_payee_in_the_log_and_statement(ledger: Ledger) -> None:
    accounts = await network(ledger)
    bob, peer = accounts["bob"], accounts["peer"]
    r = await ledger.transfer("pay-remote", bob, peer, 40, remote_payee=REMOTE_MEMBER)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["payee"], body["minutes"], body["remote"]) == (
        peer,
        40,
        {"origin": NEIGHBOUR, "account": REMOTE_MEMBER},
    )
    logged = await last_entry(ledger)
    assert isinstance(logged, Transfer)
    assert (logged.id, logged.remote) == (body["id"], Remote(origin=NEIGHBOUR, account=REMOTE_MEMBER))
    lines = (await ledger.client.get(f"/accounts/{bob}/statement", headers=auth("auditor"))).json()["lines"]
    assert (lines[0]["counterparty"], lines[0]["delta"], lines[0]["remote"]) == (
        peer,
        -40,
        {"origin": NEIGHBOUR, "account": REMOTE_MEMBER},
    )
    assert (await ledger.balance(bob), await ledger.balance(peer)) == (-40, 40)


async def test_transfer_to_a_peer_account_without_a_remote_payee_is_refused(ledger: Ledger) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    assert_problem(await ledger.transfer("t", accounts["bob"], accounts["peer"], 40), 422, "invalid")
    assert await log_state(ledger.client) == before


async def test_remote_payee_on_a_transfer_between_members_is_refused(ledger: Ledger) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    r = await ledger.transfer("t", accounts["bob"], accounts["capped"], 40, remote_payee=REMOTE_MEMBER)
    assert_problem(r, 422, "invalid")
    assert await log_state(ledger.client) == before


async def test_a_peer_account_cannot_pay_by_ordinary_transfer(ledger: Ledger) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    assert_problem(await ledger.transfer("t", accounts["peer"], accounts["bob"], 5), 422, "invalid")
    assert await log_state(ledger.client) == before


async def test_a_malformed_remote_payee_is_a_bad_request(ledger: Ledger) -> None:
    accounts = await network(ledger)
    r = await ledger.transfer("t", accounts["bob"], accounts["peer"], 5, remote_payee="bob@hillside")
    assert_problem(r, 400)


# ---------------------------------------------------------------------------------------------- deciding


async def test_accepted_decision_pays_the_member_from_the_peer_account(ledger: Ledger) -> None:
    accounts = await network(ledger)
    bob, peer = accounts["bob"], accounts["peer"]
    r = await decide(ledger, bob, 45, memo_digest="ab" * 32)
    assert r.status_code == 201, r.text
    body = r.json()
    size = len(await entries(ledger.client))
    assert body == {
        "origin": NEIGHBOUR,
        "transfer": SENT,
        "transfer_index": 17,
        "payee": bob,
        "minutes": 45,
        "decision": "accepted",
        "reason": None,
        "id": crossnet_transfer_id(NEIGHBOUR, SENT),
        "index": size - 1,
        "at": body["at"],
        "replayed": False,
    }
    logged = await last_entry(ledger)
    assert logged == Transfer(
        at=logged.at,
        id=body["id"],
        payer=peer,
        payee=bob,
        minutes=45,
        memo_digest="ab" * 32,
        remote=Remote(origin=NEIGHBOUR, transfer=SENT, index=17),
    )
    assert (await ledger.balance(peer), await ledger.balance(bob)) == (-45, 45)
    lines = (await ledger.client.get(f"/accounts/{bob}/statement", headers=auth("auditor"))).json()["lines"]
    assert (lines[0]["transfer"], lines[0]["remote"]) == (
        body["id"],
        {"origin": NEIGHBOUR, "transfer": SENT, "index": 17},
    )
    read = await read_decision(ledger)
    assert read.status_code == 200, read.text
    assert read.json() == body


@pytest.mark.parametrize(
    ("payee", "minutes", "reason"),
    [
        (None, 10, "unknown_payee"),
        ("pot", 10, "not_a_member"),
        ("peer", 10, "not_a_member"),
        ("closed", 10, "account_closed"),
        ("bob", 301, "trust_limit"),
        ("capped", 101, "ceiling"),
    ],
)
async def test_a_transfer_that_cannot_be_paid_is_answered_with_a_rejection_in_the_log(
    ledger: Ledger, payee: str | None, minutes: int, reason: str
) -> None:
    accounts = await network(ledger)
    payee_id = UNKNOWN_ACCOUNT if payee is None else accounts[payee]
    before = {name: await ledger.balance(account) for name, account in accounts.items()}
    size = len(await entries(ledger.client))
    r = await decide(ledger, payee_id, minutes)
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("decision", "reason", "id", "index", "payee", "minutes", "replayed")} == {
        "decision": "rejected",
        "reason": reason,
        "id": None,
        "index": size,
        "payee": payee_id,
        "minutes": minutes,
        "replayed": False,
    }
    logged = await last_entry(ledger)
    assert logged == CrossnetRejected(
        at=logged.at, origin=NEIGHBOUR, transfer=SENT, index=17, payee=payee_id, minutes=minutes, reason=reason
    )
    assert {name: await ledger.balance(account) for name, account in accounts.items()} == before
    assert (await read_decision(ledger)).json() == body


@pytest.mark.parametrize(("minutes", "decision"), [(45, "accepted"), (400, "rejected")])
async def test_deciding_the_same_transfer_again_returns_the_first_decision(
    ledger: Ledger, minutes: int, decision: str
) -> None:
    accounts = await network(ledger)
    first = await decide(ledger, accounts["bob"], minutes)
    assert (first.status_code, first.json()["decision"]) == (201, decision)
    before = await log_state(ledger.client)
    again = await decide(ledger, accounts["bob"], minutes)
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}
    assert await log_state(ledger.client) == before


async def test_a_rejection_stands_even_after_the_trust_limit_is_raised(ledger: Ledger) -> None:
    accounts = await network(ledger)
    first = await decide(ledger, accounts["bob"], 400)
    assert first.json()["reason"] == "trust_limit"
    r = await ledger.client.put(
        f"/accounts/{accounts['peer']}/limits", json={"floor": -1000}, headers=auth("coordinator")
    )
    assert r.status_code == 200, r.text
    again = await decide(ledger, accounts["bob"], 400)
    assert (again.status_code, again.json()["decision"], again.json()["index"]) == (
        200,
        "rejected",
        first.json()["index"],
    )
    assert await ledger.balance(accounts["bob"]) == 0


@pytest.mark.parametrize(
    "change",
    [{"minutes": 46}, {"payee": UNKNOWN_ACCOUNT}, {"index": 18}, {"memo_digest": "cd" * 32}],
    ids=["minutes", "payee", "index", "memo"],
)
async def test_deciding_the_same_transfer_with_different_content_is_a_conflict(
    ledger: Ledger, change: dict[str, Any]
) -> None:
    accounts = await network(ledger)
    first = await decide(ledger, accounts["bob"], 45)
    assert first.status_code == 201, first.text
    before = await log_state(ledger.client)
    fields: dict[str, Any] = {"payee": accounts["bob"], "minutes": 45, **change}
    body = assert_problem(await decide(ledger, **fields), 409, "conflict")
    assert body["extra"] == {"origin": NEIGHBOUR, "transfer": SENT, "index": first.json()["index"]}
    assert await log_state(ledger.client) == before
    assert await ledger.balance(accounts["bob"]) == 45


async def test_a_transfer_from_a_network_without_a_peer_account_is_not_decided(ledger: Ledger) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    r = await decide(ledger, accounts["bob"], 5, origin="timebank.test/stranger")
    body = assert_problem(r, 404, "not-found")
    assert body["extra"] == {"origin": "timebank.test/stranger"}
    assert await log_state(ledger.client) == before
    assert_problem(await read_decision(ledger, origin="timebank.test/stranger"), 404)


async def test_a_decided_transfer_from_the_neighbour_cannot_be_reversed(ledger: Ledger) -> None:
    accounts = await network(ledger)
    accepted = (await decide(ledger, accounts["bob"], 45)).json()
    before = await log_state(ledger.client)
    r = await ledger.client.post(f"/transfers/{accepted['id']}/reversal", json={"key": "undo"}, headers=auth("service"))
    assert_problem(r, 422, "invalid")
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(
    "path",
    [
        f"/crossnet/decisions/{NEIGHBOUR}/{SENT}",  # not decided (yet)
        f"/crossnet/decisions/{SENT}",  # no origin
        f"/crossnet/decisions/{NEIGHBOUR}/tr_short",
        f"/crossnet/decisions/{NEIGHBOUR}",
        "/crossnet/decisions/a%20b/" + SENT,
    ],
)
async def test_reading_a_decision_that_was_not_made_is_not_found(ledger: Ledger, path: str) -> None:
    await network(ledger)
    assert_problem(await ledger.client.get(path), 404)


# ---------------------------------------------------------------------------------------------- bad input, access

VALID = {"origin": NEIGHBOUR, "transfer": SENT, "index": 3, "payee": UNKNOWN_ACCOUNT, "minutes": 5}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**VALID, "transfer": "tr_nope"}, id="malformed-transfer"),
        pytest.param({**VALID, "origin": "bad origin"}, id="malformed-origin"),
        pytest.param({**VALID, "payee": "bob"}, id="malformed-payee"),
        pytest.param({**VALID, "index": -1}, id="negative-index"),
        pytest.param({**VALID, "minutes": 0}, id="zero-minutes"),
        pytest.param({**VALID, "minutes": 60_001}, id="minutes-over-limit"),
        pytest.param({**VALID, "minutes": "5"}, id="minutes-as-string"),
        pytest.param({**VALID, "memo_digest": "zz"}, id="memo-not-hex"),
        pytest.param({**VALID, "reason": "trust_limit"}, id="unknown-field"),
        pytest.param({k: v for k, v in VALID.items() if k != "index"}, id="missing-index"),
    ],
)
async def test_a_malformed_decision_request_is_a_bad_request_and_writes_nothing(
    ledger: Ledger, body: dict[str, Any]
) -> None:
    await network(ledger)
    before = await log_state(ledger.client)
    assert_problem(await ledger.client.post("/crossnet/decisions", json=body, headers=auth("federation")), 400)
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("auditor", 403), ("service", 403), ("coordinator", 403)])
async def test_only_the_federation_may_decide_a_neighbours_transfer(
    ledger: Ledger, role: str | None, status: int
) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    assert_problem(await decide(ledger, accounts["bob"], 5, headers={} if role is None else auth(role)), status)
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.crossnet SET reason = NULL",
        "UPDATE ledger.crossnet SET reason = 'ceiling'",
        "DELETE FROM ledger.crossnet",
        "TRUNCATE ledger.crossnet",
    ],
)
async def test_a_decision_cannot_be_changed_or_forgotten(ledger: Ledger, statement: str) -> None:
    accounts = await network(ledger)
    first = (await decide(ledger, accounts["bob"], 400)).json()
    conn = await asyncpg.connect(ledger.database_url)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(statement)
    finally:
        await conn.close()
    assert (await read_decision(ledger)).json() == first
    again = await decide(ledger, accounts["bob"], 400)
    assert again.json() == {**first, "replayed": True}
