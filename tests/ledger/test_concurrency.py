"""Concurrent callers, and concurrent ledger processes on one database, cannot break the ledger's invariants."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from services.ledger import store
from services.ledger.app import create_app
from services.ledger.appender import Appended, Appender
from services.ledger.batch import BatchWrite
from services.ledger.commands import Command, MakeTransfer, OpenAccount, Reverse
from services.ledger.entries import Transfer, entry_decoder, transfer_id
from services.ledger.tlog import CheckpointSigner
from shared import merkle
from shared.db import create_pool, migrate
from shared.errors import DomainError
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


async def test_batches_decided_while_the_one_before_is_written_keep_the_log_whole(
    database_url: str, signer: Signer
) -> None:
    """Two writers on one database, each deciding its next batch while the last is written: conflicts between
    them, keys reused after the cache forgot them and reversals must all leave one valid log."""
    pool = await create_pool(database_url, min_size=2, max_size=6)
    writers: list[Appender] = []
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "ledger", store.MIGRATIONS)
        for _ in range(2):
            writer = Appender(pool, CheckpointSigner(signer), default_floor=-600, max_batch=500, cache_transfers=20)
            writer.start()
            writers.append(writer)
        members = [(await writers[0].submit(OpenAccount(key=f"m{i}"))).entry.account for i in range(12)]  # type: ignore[union-attr]
        spender = members[0]
        answers: dict[str, Appended | DomainError] = {}

        async def worker(w: int) -> None:
            writer = writers[w % 2]
            mine: list[str] = []
            for i in range(24):
                if i % 6 == 5 and mine:
                    command: Command = Reverse(key=f"undo-{w}-{i}", transfer=mine.pop(0))
                elif i % 6 == 4:
                    # A key used earlier (often long since dropped from the cache), sent again unchanged.
                    command = _spend(f"pay-{(w * 7) % 64}-0", members, (w * 7) % 64, 0)
                elif i % 3 == 0:
                    command = MakeTransfer(key=f"spend-{w}-{i}", payer=spender, payee=members[1 + w % 11], minutes=7)
                else:
                    command = _spend(f"pay-{w}-{i}", members, w, i)
                try:
                    done = await writer.submit(command)
                except DomainError as refusal:
                    answers[command.key] = refusal
                else:
                    answers.setdefault(command.key, done)
                    if isinstance(done.entry, Transfer) and done.entry.reverses is None and not done.replayed:
                        mine.append(done.entry.id)

        await asyncio.gather(*(worker(w) for w in range(128)))  # 64 per writer: enough to split the queue
        assert sum(w.decided_ahead for w in writers) > 0, "no batch was decided while another was written"

        async with pool.acquire() as conn:
            head = await store.head(conn)
            data = await store.entries_range(conn, 0, head.size + 10)
            served = {a: b for a, _, b in await store.all_balances(conn)}
        # One gap-free log whose stored root commits to exactly its entries.
        assert len(data) == head.size
        assert merkle.root([merkle.leaf_hash(d) for d in data]) == head.root
        # Replaying it: balances sum to zero, the spender never went below its floor, and match what is served.
        replayed: Counter[str] = Counter()
        lowest = 0
        ids = Counter()
        for entry in map(entry_decoder.decode, data):
            if isinstance(entry, Transfer):
                ids[entry.id] += 1
                replayed[entry.payer] -= entry.minutes
                replayed[entry.payee] += entry.minutes
                lowest = min(lowest, replayed[spender])
        assert lowest >= -600
        assert sum(replayed.values()) == 0
        assert {a: b for a, b in served.items() if b} == {a: b for a, b in replayed.items() if b}
        # Every transfer is in the log once, and every accepted command's answer is an entry of it.
        assert set(ids.values()) == {1}
        for key, answer in answers.items():
            if isinstance(answer, Appended):
                assert data[answer.index] == answer.data, key
    finally:
        for writer in writers:
            await writer.stop()
        await pool.close()


async def test_a_batch_decided_ahead_is_decided_again_when_the_batch_before_it_is_retried(
    database_url: str, signer: Signer
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    writer = Appender(pool, CheckpointSigner(signer), default_floor=-600, max_batch=500, cache_transfers=1)
    writer.start()
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "ledger", store.MIGRATIONS)
        members = [(await writer.submit(OpenAccount(key=f"m{i}"))).entry.account for i in range(4)]  # type: ignore[union-attr]
        old = MakeTransfer(key="old", payer=members[0], payee=members[1], minutes=5)
        first = await writer.submit(old)
        await writer.submit(MakeTransfer(key="newer", payer=members[2], payee=members[3], minutes=5))  # evicts "old"
        # 64 commands queued at once: the writer writes the first half while it decides the second. The first
        # half repeats "old", which its cache has forgotten: that write is refused by the unique index and
        # decided again under the lock, where "old" is a replay and the half makes one entry fewer.
        batch = [old] + [
            MakeTransfer(key=f"t{i}", payer=members[i % 4], payee=members[(i + 1) % 4], minutes=1) for i in range(63)
        ]
        done = await asyncio.gather(*(writer.submit(c) for c in batch))
        assert done[0].replayed
        assert done[0].index == first.index
        assert writer.decided_ahead == 0  # the second half's early decision was dropped, not written
        async with pool.acquire() as conn:
            head = await store.head(conn)
            data = await store.entries_range(conn, 0, head.size + 10)
        assert head.size == 4 + 2 + 63 == len(data)
        assert merkle.root([merkle.leaf_hash(d) for d in data]) == head.root
        assert sorted(d.index for d in done[1:]) == list(range(6, 6 + 63))
    finally:
        await writer.stop()
        await pool.close()


def _spend(key: str, members: list[str], w: int, i: int) -> MakeTransfer:
    payer = members[1 + (w + i) % 11]
    payee = members[1 + (w + i + 1 + i % 5) % 11]
    return MakeTransfer(key=key, payer=payer, payee=payee, minutes=1 + (w * i) % 9)


async def test_a_batch_written_at_the_wrong_place_is_refused_whole(database_url: str, signer: Signer) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    writer = Appender(pool, CheckpointSigner(signer), default_floor=-600, max_batch=10)
    writer.start()
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "ledger", store.MIGRATIONS)
        await writer.submit(OpenAccount(key="a"))
        async with pool.acquire() as conn:
            before = await store.head(conn)
            for start in (before.size + 1, before.size - 1):
                gap = BatchWrite(start=start, size=start + 1, root=b"\0" * 32, checkpoint=b"forged")
                gap.entry_data.append(b'{"type":"forged"}')
                with pytest.raises(asyncpg.SerializationError, match="decided at"):
                    await store.write_batch(conn, gap)
            assert await store.head(conn) == before
            assert len(await store.entries_range(conn, 0, 100)) == before.size
    finally:
        await writer.stop()
        await pool.close()
