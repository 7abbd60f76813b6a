"""Many cross-network decisions in one request, as the federation's settler sends a round of them.

Each decision of a batch must come out exactly as it would alone: the same log entries, statuses and bodies, a
refusal of one leaving the others decided.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.ledger.crossnet_api import MAX_BATCH as MAX_DECISIONS
from services.ledger.entries import transfer_id
from tests.ledger import test_crossnet_settled as settled
from tests.ledger.conftest import Ledger, auth
from tests.ledger.support import assert_problem, entries, log_state
from tests.ledger.test_crossnet_api import NEIGHBOUR, UNKNOWN_ACCOUNT, network, read_decision

STRANGER = "timebank.test/elsewhere"


def decision(transfer: str, payee: str, minutes: int, *, index: int, origin: str = NEIGHBOUR) -> dict[str, Any]:
    return {"origin": origin, "transfer": transfer, "index": index, "payee": payee, "minutes": minutes}


async def batch(ledger: Ledger, decisions: list[dict[str, Any]], role: str = "federation") -> list[dict[str, Any]]:
    r = await ledger.client.post("/crossnet/decisions/batch", json={"decisions": decisions}, headers=auth(role))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert isinstance(results, list)
    return results


async def test_each_decision_of_a_batch_is_answered_as_it_would_be_alone(ledger: Ledger) -> None:
    accounts = await network(ledger, trust_limit=100)
    size = len(await entries(ledger.client))
    paid, unknown, over, stranger = (transfer_id(f"hillside {n}") for n in range(4))
    asked = [
        decision(paid, accounts["bob"], 30, index=5),
        decision(unknown, UNKNOWN_ACCOUNT, 10, index=6),
        decision(paid, accounts["bob"], 30, index=5),  # the same transfer again, in the same request
        decision(over, accounts["bob"], 80, index=7),  # 30 + 80 would pass the trust limit of 100
        decision(stranger, accounts["bob"], 5, index=1, origin=STRANGER),  # no clearing account for it
    ]
    results = await batch(ledger, asked)

    assert [r["status"] for r in results] == [201, 201, 200, 201, 404]
    accepted, rejected, replayed, limited = (r["decision"] for r in results[:4])
    assert (accepted["decision"], accepted["minutes"], accepted["replayed"]) == ("accepted", 30, False)
    assert replayed == {**accepted, "replayed": True}
    assert (rejected["decision"], rejected["reason"]) == ("rejected", "unknown_payee")
    assert (limited["decision"], limited["reason"]) == ("rejected", "trust_limit")
    assert results[4]["problem"]["type"].endswith("/not-found")
    assert "decision" not in results[4]
    # Three entries, one per decided transfer, at the indexes the answers name.
    assert sorted(r["index"] for r in (accepted, rejected, limited)) == [size, size + 1, size + 2]
    assert len(await entries(ledger.client)) == size + 3
    assert (await ledger.balance(accounts["bob"]), await ledger.balance(accounts["peer"])) == (30, -30)
    for answer, transfer in ((accepted, paid), (rejected, unknown), (limited, over)):
        assert (await read_decision(ledger, transfer)).json() == answer
    assert (await read_decision(ledger, stranger, origin=STRANGER)).status_code == 404


async def test_a_batch_sent_again_is_replayed_and_writes_nothing(ledger: Ledger) -> None:
    accounts = await network(ledger)
    asked = [decision(transfer_id(f"again {n}"), accounts["bob"], 1 + n, index=n) for n in range(20)]
    first = await batch(ledger, asked)
    assert {r["status"] for r in first} == {201}
    before = await log_state(ledger.client)
    again = await batch(ledger, asked)
    assert [r["status"] for r in again] == [200] * 20
    assert [r["decision"] for r in again] == [{**r["decision"], "replayed": True} for r in first]
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("auditor", 403), ("service", 403), ("coordinator", 403)])
async def test_only_the_federation_may_send_a_batch(ledger: Ledger, role: str | None, status: int) -> None:
    accounts = await network(ledger)
    before = await log_state(ledger.client)
    r = await ledger.client.post(
        "/crossnet/decisions/batch",
        json={"decisions": [decision(transfer_id("x"), accounts["bob"], 5, index=1)]},
        headers={} if role is None else auth(role),
    )
    assert_problem(r, status)
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(
    "count_or_body",
    [
        pytest.param(0, id="empty"),
        pytest.param(MAX_DECISIONS + 1, id="too-many"),
        pytest.param({"decisions": [{"origin": NEIGHBOUR}]}, id="malformed-item"),
    ],
)
async def test_a_malformed_batch_is_a_bad_request_and_writes_nothing(
    ledger: Ledger, count_or_body: int | dict[str, Any]
) -> None:
    accounts = await network(ledger)
    body = (
        count_or_body
        if isinstance(count_or_body, dict)
        else {"decisions": [decision(transfer_id(f"m {n}"), accounts["bob"], 1, index=n) for n in range(count_or_body)]}
    )
    before = await log_state(ledger.client)
    r = await ledger.client.post("/crossnet/decisions/batch", json=body, headers=auth("federation"))
    assert_problem(r, 400)
    assert await log_state(ledger.client) == before


async def test_each_acceptance_of_a_batch_is_recorded_as_it_would_be_alone(ledger: Ledger) -> None:
    accounts = await settled.network(ledger)
    first = await settled.pay_out(ledger, accounts, 10, key="first")
    second = await settled.pay_out(ledger, accounts, 20, key="second")
    alone = await settled.record(ledger.client, first["id"], index=41)
    assert alone.status_code == 201, alone.text
    size = len(await entries(ledger.client))
    asked = [
        {"origin": settled.NEIGHBOUR, "transfer": second["id"], "index": 42},
        {"origin": settled.NEIGHBOUR, "transfer": first["id"], "index": 41},  # recorded before: a replay
        {"origin": settled.NEIGHBOUR, "transfer": transfer_id("nobody paid this"), "index": 43},
    ]
    r = await ledger.client.post("/crossnet/acceptances/batch", json={"acceptances": asked}, headers=auth("federation"))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 200, 404]
    assert (results[0]["acceptance"]["transfer"], results[0]["acceptance"]["index"]) == (second["id"], size)
    assert results[1]["acceptance"] == {**alone.json(), "replayed": True}
    assert results[2]["problem"]["type"].endswith("/not-found")
    assert len(await entries(ledger.client)) == size + 1
    refused = await ledger.client.post(
        "/crossnet/acceptances/batch", json={"acceptances": asked}, headers=auth("coordinator")
    )
    assert_problem(refused, 403)
