"""Concurrent callers, and concurrent ledger processes on one database, cannot break the ledger's invariants."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import httpx
from litestar.testing import AsyncTestClient

from services.ledger import store
from services.ledger.app import create_app
from services.ledger.appender import Appended, Appender
from services.ledger.ledger import OpenAccount, Transfer, entry_decoder, transfer_id
from services.ledger.tlog import CheckpointSigner
from shared import merkle
from shared.db import create_pool, migrate
from shared.note import Signer
from tests.ledger.conftest import Ledger, auth, ledger_settings
from tests.ledger.support import Client, assert_problem, checkpoint, entries, gather_in_chunks, leaf_hashes


async def open_many(client: Client, prefix: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        r = await client.post("/accounts", json={"key": f"{prefix}-{i}"}, headers=auth("coordinator"))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return await gather_in_chunks([lambda i=i: one(i) for i in range(n)])  # type: ignore[misc]


async def spend(client: Client, key: str, payer: str, payee: str, minutes: int) -> httpx.Response:
    body = {"key": key, "payer": payer, "payee": payee, "minutes": minutes}
    return await client.post("/transfers", json=body, headers=auth("service"))


async def all_balances(client: Client) -> dict[str, int]:
    r = await client.get("/log/balances", headers=auth("auditor"))
    assert r.status_code == 200, r.text
    return {a["id"]: a["balance"] for a in r.json()["accounts"]}


def outcome(r: httpx.Response) -> str:
    if r.status_code == 201:
        return "created"
    return assert_problem(r, r.status_code)["type"].rsplit("/", 1)[-1]


async def assert_log_verifies(client: Client, signer: Signer) -> list[bytes]:
    """The log is gap-free, its checkpoint commits to exactly its entries, and every inclusion proof verifies."""
    data = await entries(client)
    head = await checkpoint(client, signer)
    assert head.size == len(data)
    assert head.root_hash == merkle.root(leaf_hashes(data))

    async def proof(index: int) -> None:
        r = await client.get("/log/proof/inclusion", params={"index": index, "size": head.size})
        assert r.status_code == 200, r.text
        body = r.json()
        assert base64.b64decode(body["leaf_hash"]) == merkle.leaf_hash(data[index])
        path = [base64.b64decode(h) for h in body["proof"]]
        merkle.verify_inclusion(merkle.leaf_hash(data[index]), index, head.size, path, head.root_hash)

    await gather_in_chunks([lambda i=i: proof(i) for i in range(len(data))])  # type: ignore[misc]
    return data


async def test_a_hundred_concurrent_spends_from_one_account_stop_exactly_at_its_floor(ledger: Ledger) -> None:
    spender = str((await ledger.open_account("spender"))["id"])  # floor -600 from the settings
    payees = await open_many(ledger.client, "payee", 100)
    responses = await asyncio.gather(*(spend(ledger.client, f"spend-{i}", spender, payees[i], 60) for i in range(100)))
    assert Counter(outcome(r) for r in responses) == {"created": 10, "insufficient-hours": 90}
    assert await ledger.balance(spender) == -600
    balances = await all_balances(ledger.client)
    assert sum(balances.values()) == 0
    assert balances[spender] == -600
    assert sorted(v for v in balances.values() if v > 0) == [60] * 10
    data = await assert_log_verifies(ledger.client, ledger.signer)
    assert len(data) == 1 + 100 + 10


async def test_one_key_sent_by_twenty_concurrent_requests_makes_one_entry(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    responses = await asyncio.gather(*(spend(ledger.client, "same-key", alice, bob, 25) for _ in range(20)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 19}
    bodies = [r.json() for r in responses]
    assert {(b["id"], b["index"], b["at"]) for b in bodies} == {(transfer_id("same-key"), 2, bodies[0]["at"])}
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 19
    data = await assert_log_verifies(ledger.client, ledger.signer)
    assert len(data) == 3
    assert await ledger.balance(alice) == -25


async def test_concurrent_reversals_of_one_transfer_reverse_it_once(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    original = (await spend(ledger.client, "t", alice, bob, 40)).json()
    responses = await asyncio.gather(
        *(
            ledger.client.post(f"/transfers/{original['id']}/reversal", json={"key": f"r{i}"}, headers=auth("service"))
            for i in range(20)
        )
    )
    assert Counter(outcome(r) for r in responses) == {"created": 1, "conflict": 19}
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (0, 0)
    assert len(await assert_log_verifies(ledger.client, ledger.signer)) == 4


async def test_concurrent_opens_with_one_key_open_one_account(ledger: Ledger) -> None:
    responses = await asyncio.gather(
        *(ledger.client.post("/accounts", json={"key": "k"}, headers=auth("coordinator")) for _ in range(20))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 19}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await entries(ledger.client)) == 1


async def test_two_ledger_processes_on_one_database_keep_the_floor_and_one_log(ledger: Ledger) -> None:
    other_app = create_app(ledger_settings(), database_url=ledger.database_url, signer=ledger.signer)
    async with AsyncTestClient(app=other_app) as other:
        clients = [ledger.client, other]
        spender = str((await ledger.open_account("spender"))["id"])
        payees = await open_many(other, "payee", 20)
        # Background traffic between the payees through both processes, interleaved with the spends.
        jobs = [spend(clients[i % 2], f"spend-{i}", spender, payees[i % 20], 60) for i in range(60)]
        jobs += [spend(clients[i % 2], f"busy-{i}", payees[i % 20], payees[(i + 1) % 20], 1 + i % 7) for i in range(80)]
        responses = await asyncio.gather(*jobs)
        spends, busy = responses[:60], responses[60:]
        assert Counter(outcome(r) for r in spends) == {"created": 10, "insufficient-hours": 50}
        assert all(r.status_code == 201 for r in busy), [r.text for r in busy if r.status_code != 201][:3]
        for client in clients:
            r = await client.get(f"/accounts/{spender}", headers=auth("auditor"))
            assert r.json()["balance"] == -600
            balances = await all_balances(client)
            assert sum(balances.values()) == 0
        ours = await assert_log_verifies(ledger.client, ledger.signer)
        theirs = await assert_log_verifies(other, ledger.signer)
        assert ours == theirs
        assert len(ours) == 1 + 20 + 10 + 80
        # Every index holds exactly one entry, and every accepted transfer is in the log once.
        logged = Counter(e.id for e in map(entry_decoder.decode, ours) if isinstance(e, Transfer))
        accepted = [r.json()["id"] for r in responses if r.status_code == 201]
        assert logged == Counter(accepted)
        # Replaying the log gives the balances both processes report.
        replayed: Counter[str] = Counter()
        for e in map(entry_decoder.decode, ours):
            if isinstance(e, Transfer):
                replayed[e.payer] -= e.minutes
                replayed[e.payee] += e.minutes
        assert {k: v for k, v in (await all_balances(other)).items() if v} == {k: v for k, v in replayed.items() if v}


async def test_stopping_the_writer_finishes_the_commands_already_submitted(database_url: str, signer: Signer) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    tasks: list[asyncio.Task[Appended]] = []
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "ledger", store.MIGRATIONS)
        appender = Appender(pool, CheckpointSigner(signer), default_floor=-600, max_batch=10)
        appender.start()
        tasks = [asyncio.create_task(appender.submit(OpenAccount(key=f"k{n}"))) for n in range(50)]
        for _ in range(3):
            await asyncio.sleep(0)  # the writer has taken the first batch and is talking to the database
        await appender.stop()
        done, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, f"{len(pending)} callers were left waiting forever after stop()"
        failed = [t.exception() for t in done if t.exception() is not None]
        assert not failed, failed[:3]
        async with pool.acquire() as conn:
            assert (await store.head(conn)).size == 50
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


async def test_refused_commands_do_not_fail_the_others_in_their_batch(ledger: Ledger) -> None:
    await ledger.open_account("hill", kind="peer", peer="timebank.test/hillside")
    alice = str((await ledger.open_account("alice"))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    good = [spend(ledger.client, f"ok-{i}", alice, bob, 1) for i in range(30)]
    bad = [
        ledger.client.post(
            "/accounts",
            json={"key": "hill-again", "kind": "peer", "peer": "timebank.test/hillside"},
            headers=auth("coordinator"),
        ),
        spend(ledger.client, "self", alice, alice, 1),
        spend(ledger.client, "too-much", bob, alice, 10_000),
        spend(ledger.client, "ok-0", alice, bob, 2),  # a used key with other content
    ]
    responses = await asyncio.gather(*good[:15], *bad, *good[15:])
    refused = responses[15 : 15 + len(bad)]
    accepted = responses[:15] + responses[15 + len(bad) :]
    assert all(r.status_code in (200, 201) for r in accepted), [r.text for r in accepted if r.status_code >= 300]
    assert all(400 <= r.status_code < 500 for r in refused), [(r.status_code, r.text) for r in refused]
    assert await ledger.balance(alice) == -30
    assert len(await assert_log_verifies(ledger.client, ledger.signer)) == 3 + 30
