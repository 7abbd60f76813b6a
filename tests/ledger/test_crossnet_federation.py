"""Two networks trading through their logs, with the federation done by hand, and decisions under concurrency.

Network A (conftest's ``ORIGIN``) and network B each run their own ledger on their own database. The test plays the
federation: it reads A's public log, asks B to decide each transfer naming B, reads B's decision back and, on a
rejection, has A reverse its transfer. At the end an auditor who holds nothing but the two public logs checks that
the clearing accounts net to zero and that every cross-network transfer pairs up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.ledger.app import create_app
from services.ledger.entries import AccountOpened, CrossnetRejected, LogEntry, Transfer, transfer_id
from services.node.postgres import PostgresServer
from shared.note import Signer
from tests.ledger.conftest import ORIGIN, Ledger, auth, ledger_settings
from tests.ledger.support import assert_problem, entries, log_of, relay
from tests.ledger.test_concurrency import all_balances, assert_log_verifies

ORIGIN_B = "timebank.test/hillside"


@pytest.fixture
async def network_b(postgres_server: PostgresServer) -> AsyncIterator[Ledger]:
    """Network B: its own key, its own database, its own ledger process."""
    name = "crossnet_b"
    postgres_server.create_database(name)
    signer = Signer.generate(ORIGIN_B)
    app = create_app(ledger_settings(), database_url=postgres_server.dsn(name), signer=signer)
    try:
        async with AsyncTestClient(app=app) as client:
            yield Ledger(app, client, signer, postgres_server.dsn(name))
    finally:
        postgres_server.drop_database(name)


def peer_balance(log: list[LogEntry], neighbour: str) -> int:
    """The auditor's replay: the balance of the clearing account for ``neighbour``, from the log alone."""
    peer = next(e.account for e in log if isinstance(e, AccountOpened) and e.peer == neighbour)
    balance = 0
    for e in log:
        if isinstance(e, Transfer):
            balance += (e.payee == peer) * e.minutes - (e.payer == peer) * e.minutes
    return balance


def assert_pairs_up(log_a: list[LogEntry], log_b: list[LogEntry]) -> None:
    """Every A transfer naming B is decided exactly once in B's log, and every rejection is reversed in A's."""
    sent = {e.id: (i, e) for i, e in enumerate(log_a) if isinstance(e, Transfer) and e.remote is not None}
    reversed_ids = {e.reverses for e in log_a if isinstance(e, Transfer) and e.reverses is not None}
    answers: Counter[str] = Counter()
    for e in log_b:
        if isinstance(e, Transfer) and e.remote is not None and e.remote.origin == ORIGIN:
            tid, index, payee, minutes, accepted = e.remote.transfer, e.remote.index, e.payee, e.minutes, True
        elif isinstance(e, CrossnetRejected) and e.origin == ORIGIN:
            tid, index, payee, minutes, accepted = e.transfer, e.index, e.payee, e.minutes, False
        else:
            continue
        assert tid is not None
        assert tid in sent, "B decided a transfer A never made"
        i, original = sent[tid]
        assert original.remote is not None
        assert (index, payee, minutes) == (i, original.remote.account, original.minutes)
        assert (tid in reversed_ids) == (not accepted), "a rejection was not reversed, or an acceptance was"
        answers[tid] += 1
    assert answers == Counter(sent.keys()), "a transfer was decided twice, or not at all"


async def test_a_trade_between_two_networks_settles_to_zero_on_both_logs(ledger: Ledger, network_b: Ledger) -> None:
    a, b = ledger, network_b
    alice = str((await a.open_account("alice"))["id"])
    a_peer = str((await a.open_account("peer-b", kind="peer", peer=ORIGIN_B, floor=-300))["id"])
    bob = str((await b.open_account("bob"))["id"])
    await b.open_account("peer-a", kind="peer", peer=ORIGIN, floor=-300)

    r = await a.transfer("lift-to-clinic", alice, a_peer, 90, remote_payee=bob, memo_digest="ef" * 32)
    assert r.status_code == 201, r.text
    decisions = await relay(a.client, b.client, ORIGIN, ORIGIN_B)
    assert [(d["decision"], d["payee"], d["minutes"]) for d in decisions] == [("accepted", bob, 90)]
    # Relaying again (a redelivery) changes nothing.
    assert await relay(a.client, b.client, ORIGIN, ORIGIN_B) == decisions

    log_a, log_b = await log_of(a.client), await log_of(b.client)
    assert peer_balance(log_a, ORIGIN_B) == 90
    assert peer_balance(log_b, ORIGIN) == -90
    assert peer_balance(log_a, ORIGIN_B) + peer_balance(log_b, ORIGIN) == 0
    assert_pairs_up(log_a, log_b)
    accepted = log_b[decisions[0]["index"]]
    assert isinstance(accepted, Transfer)
    assert accepted.memo_digest == "ef" * 32  # bob can prove what the hours were for, as alice can
    assert (await a.balance(alice), await b.balance(bob)) == (-90, 90)
    await assert_log_verifies(a.client, a.signer)
    await assert_log_verifies(b.client, b.signer)


async def test_a_rejected_trade_is_reversed_by_the_payer_and_both_logs_net_to_zero(
    ledger: Ledger, network_b: Ledger
) -> None:
    a, b = ledger, network_b
    alice = str((await a.open_account("alice"))["id"])
    a_peer = str((await a.open_account("peer-b", kind="peer", peer=ORIGIN_B, floor=-300))["id"])
    bob = str((await b.open_account("bob"))["id"])
    await b.open_account("peer-a", kind="peer", peer=ORIGIN, floor=-100)  # B trusts A for 100 minutes only
    nobody = "acct_" + "9" * 20

    for key, payee, minutes in [("ok", bob, 60), ("too-much", bob, 60), ("typo", nobody, 15)]:
        r = await a.transfer(key, alice, a_peer, minutes, remote_payee=payee)
        assert r.status_code == 201, r.text
    assert await a.balance(a_peer) == 135  # all three in flight
    decisions = await relay(a.client, b.client, ORIGIN, ORIGIN_B)
    assert [(d["decision"], d["reason"]) for d in decisions] == [
        ("accepted", None),
        ("rejected", "trust_limit"),
        ("rejected", "unknown_payee"),
    ]
    # Redelivered: the reversals are replays, nothing is decided again.
    await relay(a.client, b.client, ORIGIN, ORIGIN_B)

    log_a, log_b = await log_of(a.client), await log_of(b.client)
    assert peer_balance(log_a, ORIGIN_B) == 60
    assert peer_balance(log_a, ORIGIN_B) + peer_balance(log_b, ORIGIN) == 0
    assert_pairs_up(log_a, log_b)
    assert (await a.balance(alice), await b.balance(bob)) == (-60, 60)
    for client in (a.client, b.client):
        assert sum((await all_balances(client)).values()) == 0


async def test_many_concurrent_identical_decisions_make_one_entry(ledger: Ledger) -> None:
    peer = str((await ledger.open_account("peer", kind="peer", peer=ORIGIN_B, floor=-300))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    other_app = create_app(ledger_settings(), database_url=ledger.database_url, signer=ledger.signer)
    body = {"origin": ORIGIN_B, "transfer": transfer_id("x"), "index": 4, "payee": bob, "minutes": 30}
    async with AsyncTestClient(app=other_app) as other:
        responses = await asyncio.gather(
            *(
                (ledger.client, other)[i % 2].post("/crossnet/decisions", json=body, headers=auth("federation"))
                for i in range(40)
            )
        )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 39}
    assert len({(r.json()["id"], r.json()["index"], r.json()["at"]) for r in responses}) == 1
    data = await assert_log_verifies(ledger.client, ledger.signer)
    assert len(data) == 3
    assert (await ledger.balance(peer), await ledger.balance(bob)) == (-30, 30)


async def test_concurrent_identical_rejections_make_one_entry(ledger: Ledger) -> None:
    await ledger.open_account("peer", kind="peer", peer=ORIGIN_B, floor=-300)
    body = {"origin": ORIGIN_B, "transfer": transfer_id("x"), "index": 4, "payee": "acct_" + "7" * 20, "minutes": 30}
    responses = await asyncio.gather(
        *(ledger.client.post("/crossnet/decisions", json=body, headers=auth("federation")) for _ in range(20))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 19}
    assert {(r.json()["decision"], r.json()["reason"], r.json()["index"]) for r in responses} == {
        ("rejected", "unknown_payee", 1)
    }
    assert len(await entries(ledger.client)) == 2


async def test_concurrent_decisions_from_two_processes_stop_exactly_at_the_trust_limit(ledger: Ledger) -> None:
    peer = str((await ledger.open_account("peer", kind="peer", peer=ORIGIN_B, floor=-600))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    alice = str((await ledger.open_account("alice"))["id"])
    other_app = create_app(ledger_settings(), database_url=ledger.database_url, signer=ledger.signer)
    async with AsyncTestClient(app=other_app) as other:
        clients = (ledger.client, other)

        async def one(i: int) -> Any:
            body = {"origin": ORIGIN_B, "transfer": transfer_id(f"t{i}"), "index": i, "payee": bob, "minutes": 60}
            return await clients[i % 2].post("/crossnet/decisions", json=body, headers=auth("federation"))

        # Ordinary transfers keep both writers busy meanwhile.
        busy = [
            clients[i % 2].post(
                "/transfers", json={"key": f"b{i}", "payer": alice, "payee": bob, "minutes": 1}, headers=auth("service")
            )
            for i in range(20)
        ]
        responses = await asyncio.gather(*(one(i) for i in range(30)), *busy)
        decided, moved = responses[:30], responses[30:]
        again = await asyncio.gather(*(one(i) for i in range(30)))
    assert all(r.status_code == 201 for r in moved)
    assert all(r.status_code == 201 for r in decided), [r.text for r in decided if r.status_code != 201][:2]
    assert Counter((r.json()["decision"], r.json()["reason"]) for r in decided) == {
        ("accepted", None): 10,
        ("rejected", "trust_limit"): 20,
    }
    assert [r.json() for r in again] == [{**r.json(), "replayed": True} for r in decided]
    assert await ledger.balance(peer) == -600
    assert sum((await all_balances(ledger.client)).values()) == 0
    assert len(await assert_log_verifies(ledger.client, ledger.signer)) == 3 + 30 + 20


async def test_deciding_for_an_unlinked_network_is_refused_under_concurrency_too(ledger: Ledger) -> None:
    bob = str((await ledger.open_account("bob"))["id"])
    body = {"origin": ORIGIN_B, "transfer": transfer_id("x"), "index": 4, "payee": bob, "minutes": 30}
    responses = await asyncio.gather(
        *(ledger.client.post("/crossnet/decisions", json=body, headers=auth("federation")) for _ in range(10))
    )
    for r in responses:
        assert_problem(r, 404)
    assert len(await entries(ledger.client)) == 1
