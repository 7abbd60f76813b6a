"""The exchange's outbox against a real ledger: every command reaches the ledger once, and its outcome is recorded
once, through duplicates, refusals, ledger outages, crashes between the ledger's commit and the exchange's, and
two workers sharing one database."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import msgspec
import pytest

import tests.ledger.processes
from services.exchange import outbox
from services.exchange.outbox import (
    AnyOutcome,
    Delivered,
    OpenLedgerAccount,
    OutboxCommand,
    OutboxWorker,
    PostTransfer,
    Refused,
    enqueue,
)
from services.exchange.writes import Write, compose
from services.ledger.client import LedgerClient, OpenedAccount, PostedTransfer
from services.node.processes import free_port
from shared.db import Connection, create_pool
from shared.note import Signer, write_signer_key
from tests.ledger.conftest import ORIGIN, TOKENS
from tests.ledger.processes import serve

# Fast enough for tests; production keeps the defaults (1 s poll, backoff up to 30 s).
FAST = {"poll_interval": 0.2, "backoff_base": 0.05, "backoff_max": 0.2}
_RECORD = """
INSERT INTO exchange.events (stream, version, type, data)
SELECT $1, coalesce(max(version), 0) + 1, $2, $3 FROM exchange.events WHERE stream = $1
"""
_outcome = msgspec.json.Decoder(AnyOutcome)


class Recorder:
    """An ``on_outcome`` that does what the exchange does: appends the outcome to the command's event stream."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[OutboxCommand, AnyOutcome]] = []
        self._failures_left = fail_first

    async def __call__(self, conn: Connection, command: OutboxCommand, outcome: AnyOutcome) -> None:
        self.calls.append((command, outcome))
        if self._failures_left:
            self._failures_left -= 1
            raise RuntimeError("the exchange died while recording the outcome")
        tag = type(outcome).__struct_config__.tag
        await conn.execute(_RECORD, command.stream or command.key, tag, msgspec.json.encode(outcome))


async def recorded(pool: asyncpg.Pool, stream: str) -> list[AnyOutcome]:
    """The outcomes the exchange committed to ``stream``, in order."""
    rows = await pool.fetch("SELECT data FROM exchange.events WHERE stream = $1 ORDER BY version", stream)
    return [_outcome.decode(r["data"]) for r in rows]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds (it reads the database or the ledger, so it is polled)."""
    async with asyncio.timeout(30):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def done(pool: asyncpg.Pool, key: str) -> bool:
    return (await entry(pool, key)).done_at is not None


async def entry(pool: asyncpg.Pool, key: str) -> outbox.OutboxEntry:
    async with pool.acquire() as conn:
        found = await outbox.entry(conn, key)
    assert found is not None
    return found


async def enqueue_all(pool: asyncpg.Pool, *commands: OutboxCommand) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for command in commands:
            await enqueue(conn, command)


@asynccontextmanager
async def running(
    pool: asyncpg.Pool, client: LedgerClient, on_outcome: outbox.OnOutcome, **options: object
) -> AsyncIterator[OutboxWorker]:
    worker = OutboxWorker(pool, client, on_outcome, **{**FAST, **options})  # type: ignore[arg-type]
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def two_members(client: LedgerClient, unique: str, floor: int | None = None) -> tuple[str, str]:
    receiver = await client.open_account(f"{unique}-receiver", floor=floor)
    provider = await client.open_account(f"{unique}-provider")
    return receiver.account, provider.account


async def ledger_lines(client: LedgerClient, account: str) -> list[tuple[str, int]]:
    return [(line.transfer, line.delta) async for line in client.statement_lines(account)]


def posted(outcome: AnyOutcome) -> PostedTransfer:
    assert isinstance(outcome, Delivered), outcome
    assert isinstance(outcome.result, PostedTransfer)
    return outcome.result


async def test_every_outbox_query_fits_the_migrated_schema(exchange_pool: asyncpg.Pool) -> None:
    async with exchange_pool.acquire() as conn:
        for name, query in outbox.QUERIES.items():
            assert await conn.prepare(query) is not None, name


async def test_an_exchange_decided_twice_is_posted_once_and_recorded_once(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique)
    digest = "5e" * 32
    settle = PostTransfer(
        key=f"{unique}-ex_1",
        stream=f"exchange-{unique}",
        payer=receiver,
        payee=provider,
        minutes=90,
        memo_digest=digest,
        exchange_ref="ex_1",
    )
    await enqueue_all(exchange_pool, settle)
    # The same decision again (a retried request), even with different numbers: the first one stands.
    await enqueue_all(exchange_pool, settle, msgspec.structs.replace(settle, minutes=30))
    assert await exchange_pool.fetchval("SELECT count(*) FROM exchange.outbox") == 1

    recorder = Recorder()
    async with running(exchange_pool, ledger_client, recorder) as worker:
        worker.wake()
        await eventually(lambda: done(exchange_pool, settle.key))

    assert len(recorder.calls) == 1
    assert recorder.calls[0][0] == settle
    transfer = posted(recorder.calls[0][1])
    assert (transfer.payer, transfer.payee, transfer.minutes, transfer.memo_digest, transfer.replayed) == (
        receiver,
        provider,
        90,
        digest,
        False,
    )
    row = await entry(exchange_pool, settle.key)
    assert (row.attempts, row.last_error, row.outcome) == (1, None, Delivered(result=transfer))
    assert await recorded(exchange_pool, f"exchange-{unique}") == [Delivered(result=transfer)]
    assert await ledger_lines(ledger_client, receiver) == [(transfer.id, -90)]
    assert (await ledger_client.account(provider)).balance == 90


async def test_opening_accounts_through_the_outbox_tells_the_exchange_each_account(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    member = OpenLedgerAccount(key=f"{unique}-member-mem_1", stream=f"member-{unique}", member="mem_1")
    pot = OpenLedgerAccount(key=f"{unique}-pot", stream=f"pot-{unique}", kind="community")
    await enqueue_all(exchange_pool, member, pot)

    recorder = Recorder()
    async with running(exchange_pool, ledger_client, recorder) as worker:
        worker.wake()
        await eventually(lambda: done(exchange_pool, pot.key))
        await eventually(lambda: done(exchange_pool, member.key))

    outcomes = {command.key: outcome for command, outcome in recorder.calls}
    assert len(recorder.calls) == 2
    opened = {}
    for command in (member, pot):
        outcome = outcomes[command.key]
        assert isinstance(outcome, Delivered)
        assert isinstance(outcome.result, OpenedAccount)
        assert outcome.result.replayed is False
        assert await recorded(exchange_pool, command.stream or "") == [outcome]
        opened[command.key] = outcome.result
    assert (opened[member.key].kind, opened[member.key].floor) == ("member", -600)
    assert (opened[pot.key].kind, opened[pot.key].floor) == ("community", 0)
    # The ledger knows these accounts, and approving the member again opens nothing new.
    view = await ledger_client.account(opened[member.key].account)
    assert (view.balance, view.closed) == (0, False)
    assert (await ledger_client.open_account(member.key)).account == opened[member.key].account


async def test_a_refused_transfer_is_recorded_once_and_never_retried(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique, floor=-60)
    settle = PostTransfer(key=f"{unique}-ex_2", stream=f"exchange-{unique}", payer=receiver, payee=provider, minutes=61)
    await enqueue_all(exchange_pool, settle)

    recorder = Recorder()
    async with running(exchange_pool, ledger_client, recorder) as worker:
        worker.wake()
        await eventually(lambda: done(exchange_pool, settle.key))
        # More rounds come and go (wake-ups and polls): none sends the refused command again.
        for _ in range(5):
            worker.wake()
            await asyncio.sleep(0.1)
        await asyncio.sleep(3 * FAST["poll_interval"])

    assert len(recorder.calls) == 1
    outcome = recorder.calls[0][1]
    assert isinstance(outcome, Refused)
    assert (outcome.status, outcome.reason) == (409, "insufficient-hours")
    assert outcome.problem["extra"]["floor"] == -60
    row = await entry(exchange_pool, settle.key)
    assert (row.attempts, row.outcome) == (1, outcome)
    assert await recorded(exchange_pool, f"exchange-{unique}") == [outcome]
    assert await ledger_lines(ledger_client, receiver) == []


async def test_while_the_ledger_is_down_the_command_waits_and_is_posted_once_when_it_returns(
    exchange_pool: asyncpg.Pool, database_url: str, server_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger runs (on the exchange's database, as `timebank serve` would for a small network) at a fixed
    # address, so it can be stopped and brought back where the exchange expects it.
    port = free_port()
    monkeypatch.setattr(tests.ledger.processes, "free_port", lambda: port)
    write_signer_key(server_tmp_path / "network.key", Signer.generate(ORIGIN))
    key_file = server_tmp_path / "network.key"

    async with LedgerClient(f"http://127.0.0.1:{port}", TOKENS["service"], timeout=2) as client:
        with serve(server_tmp_path, database_url, key_file):
            receiver, provider = await two_members(client, "down")
        settle = PostTransfer(key="ex_3", stream="exchange-ex_3", payer=receiver, payee=provider, minutes=45)
        await enqueue_all(exchange_pool, settle)

        recorder = Recorder()
        async with running(exchange_pool, client, recorder) as worker:
            worker.wake()

            async def tried_twice() -> bool:
                return (await entry(exchange_pool, settle.key)).attempts >= 2

            await eventually(tried_twice)
            waiting = await entry(exchange_pool, settle.key)
            assert waiting.done_at is None
            assert waiting.outcome is None
            assert waiting.last_error is not None
            assert "ConnectError" in waiting.last_error
            assert recorder.calls == []

            with serve(server_tmp_path, database_url, key_file):
                worker.wake()
                await eventually(lambda: done(exchange_pool, settle.key))
                await worker.stop()
                lines = await ledger_lines(client, receiver)

    assert len(recorder.calls) == 1
    transfer = posted(recorder.calls[0][1])
    assert transfer.replayed is False
    assert lines == [(transfer.id, -45)]
    assert await recorded(exchange_pool, "exchange-ex_3") == [Delivered(result=transfer)]


async def test_an_outcome_that_failed_to_record_is_resent_and_the_ledger_answers_with_the_original(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique)
    settle = PostTransfer(key=f"{unique}-ex_4", stream=f"exchange-{unique}", payer=receiver, payee=provider, minutes=20)
    await enqueue_all(exchange_pool, settle)

    recorder = Recorder(fail_first=1)
    async with running(exchange_pool, ledger_client, recorder) as worker:
        worker.wake()
        await eventually(lambda: done(exchange_pool, settle.key))

    assert len(recorder.calls) == 2
    first, second = (posted(outcome) for _, outcome in recorder.calls)
    assert (first.replayed, second.replayed) == (False, True)
    assert (second.id, second.index) == (first.id, first.index)
    row = await entry(exchange_pool, settle.key)
    assert row.attempts == 2
    assert row.last_error is not None
    assert "the exchange died while recording the outcome" in row.last_error
    assert await recorded(exchange_pool, f"exchange-{unique}") == [Delivered(result=second)]
    assert await ledger_lines(ledger_client, receiver) == [(first.id, -20)]


async def test_a_worker_dying_after_the_ledger_committed_leaves_the_command_to_another_which_gets_the_original(
    exchange_pool: asyncpg.Pool, database_url: str, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique)
    settle = PostTransfer(key=f"{unique}-ex_5", stream=f"exchange-{unique}", payer=receiver, payee=provider, minutes=75)
    await enqueue_all(exchange_pool, settle)

    doomed_calls: list[AnyOutcome] = []
    in_outcome, release = asyncio.Event(), asyncio.Event()

    async def hang(conn: Connection, command: OutboxCommand, outcome: AnyOutcome) -> None:
        doomed_calls.append(outcome)
        in_outcome.set()
        await release.wait()

    doomed_pool = await create_pool(database_url, min_size=1, max_size=2)
    doomed = OutboxWorker(doomed_pool, ledger_client, hang, **FAST)  # type: ignore[arg-type]
    doomed.start()
    survivor_recorder = Recorder()
    try:
        await asyncio.wait_for(in_outcome.wait(), 30)  # the ledger has committed the transfer
        async with running(exchange_pool, ledger_client, survivor_recorder) as survivor:
            # While the first worker holds the row, the second leaves it alone.
            survivor.wake()
            await asyncio.sleep(4 * FAST["poll_interval"])
            assert survivor_recorder.calls == []
            # The first worker's process dies: its connections drop, and its transaction with them.
            doomed_pool.terminate()
            await eventually(lambda: done(exchange_pool, settle.key))
    finally:
        release.set()
        await doomed.stop()

    assert len(doomed_calls) == 1
    original = posted(doomed_calls[0])
    assert original.replayed is False
    assert len(survivor_recorder.calls) == 1
    resent = posted(survivor_recorder.calls[0][1])
    assert resent.replayed is True
    assert (resent.id, resent.index) == (original.id, original.index)
    assert await recorded(exchange_pool, f"exchange-{unique}") == [Delivered(result=resent)]
    assert await ledger_lines(ledger_client, receiver) == [(original.id, -75)]


async def test_stop_finishes_the_round_in_flight_and_a_duplicate_decision_meanwhile_does_not_wait(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique)
    settle = PostTransfer(key=f"{unique}-ex_6", stream=f"exchange-{unique}", payer=receiver, payee=provider, minutes=15)
    await enqueue_all(exchange_pool, settle)
    recorder = Recorder()
    in_outcome, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: Connection, command: OutboxCommand, outcome: AnyOutcome) -> None:
        in_outcome.set()
        await release.wait()
        await recorder(conn, command, outcome)

    worker = OutboxWorker(exchange_pool, ledger_client, slow, **FAST)  # type: ignore[arg-type]
    worker.start()
    try:
        await asyncio.wait_for(in_outcome.wait(), 30)
        async with asyncio.timeout(5):
            await enqueue_all(exchange_pool, settle)
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()
        release.set()
        await stopping
    finally:
        release.set()
        await worker.stop()

    row = await entry(exchange_pool, settle.key)
    assert row.done_at is not None
    assert len(recorder.calls) == 1
    assert await recorded(exchange_pool, f"exchange-{unique}") == [recorder.calls[0][1]]


async def test_two_workers_on_one_database_send_and_record_every_command_once(
    exchange_pool: asyncpg.Pool, database_url: str, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique, floor=-100_000)
    commands = [
        PostTransfer(key=f"{unique}-ex-{i}", stream=f"exchange-{unique}-{i}", payer=receiver, payee=provider, minutes=i)
        for i in range(1, 151)
    ]
    await enqueue_all(exchange_pool, *commands)

    other_pool = await create_pool(database_url, min_size=1, max_size=3)
    one, two = Recorder(), Recorder()
    try:
        async with (
            running(exchange_pool, ledger_client, one, batch_size=10),
            running(other_pool, ledger_client, two, batch_size=10),
        ):
            await eventually(
                lambda: exchange_pool.fetchval("SELECT count(*) = 150 FROM exchange.outbox WHERE done_at IS NOT NULL")
            )
    finally:
        await other_pool.close()

    assert one.calls
    assert two.calls
    keys = [command.key for command, _ in one.calls + two.calls]
    assert sorted(keys) == sorted(c.key for c in commands)
    transfers = [posted(outcome) for _, outcome in one.calls + two.calls]
    assert not any(t.replayed for t in transfers)  # no command was sent twice
    assert await exchange_pool.fetchval("SELECT count(*) FROM exchange.events") == 150
    lines = await ledger_lines(ledger_client, receiver)
    assert sorted(lines) == sorted((t.id, -t.minutes) for t in transfers)
    assert (await ledger_client.account(receiver)).balance == -sum(range(1, 151))


async def test_a_wrong_token_or_address_keeps_the_command_waiting_until_the_operator_fixes_it(
    exchange_pool: asyncpg.Pool, ledger_url: str, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique)
    settle = PostTransfer(key=f"{unique}-ex_7", stream=f"exchange-{unique}", payer=receiver, payee=provider, minutes=5)
    await enqueue_all(exchange_pool, settle)
    recorder = Recorder()

    for base, token, status in ((ledger_url, "a-revoked-token", "401"), (ledger_url + "/v9", TOKENS["service"], "404")):
        async with LedgerClient(base, token) as misconfigured, running(exchange_pool, misconfigured, recorder):
            await eventually(functools.partial(_attempted, exchange_pool, settle.key, status))
    waiting = await entry(exchange_pool, settle.key)
    assert (waiting.done_at, waiting.outcome) == (None, None)
    assert recorder.calls == []
    assert await ledger_lines(ledger_client, receiver) == []

    async with running(exchange_pool, ledger_client, recorder):
        await eventually(lambda: done(exchange_pool, settle.key))
    assert len(recorder.calls) == 1
    assert posted(recorder.calls[0][1]).replayed is False
    assert len(await ledger_lines(ledger_client, receiver)) == 1


async def _attempted(pool: asyncpg.Pool, key: str, status: str) -> bool:
    last_error = (await entry(pool, key)).last_error
    return last_error is not None and f"({status} " in last_error


class BatchRecorder:
    """An ``on_outcomes`` that records a round's answers at once, as the exchange does (failing its first calls
    if told to, like a race with a command on one of the streams)."""

    def __init__(self, single: Recorder, fail_first: int = 0) -> None:
        self.single = single
        self.rounds: list[list[str]] = []
        self._failures_left = fail_first

    async def __call__(self, conn: Connection, answers: list[tuple[OutboxCommand, AnyOutcome]], done: Write) -> None:
        self.rounds.append([command.key for command, _ in answers])
        for command, outcome in answers:
            await self.single(conn, command, outcome)
        if self._failures_left:
            self._failures_left -= 1
            raise RuntimeError("another command appended to one of the streams")
        marks = compose([done])
        await conn.execute(marks.sql, *marks.args)


async def test_a_rounds_answers_are_recorded_at_once_or_else_one_by_one(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique, floor=-100_000)
    commands = [
        PostTransfer(key=f"{unique}-ex-{i}", stream=f"exchange-{unique}-{i}", payer=receiver, payee=provider, minutes=i)
        for i in range(1, 7)
    ]
    for first, then in ((commands[:3], 1), (commands[3:], 0)):
        await enqueue_all(exchange_pool, *first)
        one_by_one = Recorder()
        at_once = BatchRecorder(Recorder(), fail_first=then)
        async with running(exchange_pool, ledger_client, one_by_one, on_outcomes=at_once) as worker:
            worker.wake()
            for command in first:
                await eventually(functools.partial(done, exchange_pool, command.key))
        assert at_once.rounds == [[c.key for c in first]]
        # What the failed attempt wrote was rolled back with it: each answer is recorded once, one by one.
        assert [c.key for c, _ in one_by_one.calls] == ([c.key for c in first] if then else [])
        for command in first:
            outcomes = await recorded(exchange_pool, command.stream or "")
            assert len(outcomes) == 1
            assert posted(outcomes[0]).minutes == command.minutes
            assert (await entry(exchange_pool, command.key)).attempts == 1


async def test_wake_ups_soon_after_a_round_started_are_served_together_by_the_next(
    exchange_pool: asyncpg.Pool, ledger_client: LedgerClient, unique: str
) -> None:
    receiver, provider = await two_members(ledger_client, unique, floor=-100_000)
    commands = [
        PostTransfer(key=f"{unique}-ex-{i}", stream=f"exchange-{unique}-{i}", payer=receiver, payee=provider, minutes=i)
        for i in range(1, 5)
    ]
    at_once = BatchRecorder(Recorder())
    options = {"on_outcomes": at_once, "linger": 0.5, "poll_interval": 30.0}
    async with running(exchange_pool, ledger_client, Recorder(), **options) as worker:
        # After a quiet spell a wake-up starts a round at once.
        await enqueue_all(exchange_pool, commands[0])
        worker.wake()
        await eventually(functools.partial(done, exchange_pool, commands[0].key))
        # The next ones, within the linger: one round takes them all.
        for command in commands[1:]:
            await enqueue_all(exchange_pool, command)
            worker.wake()
        for command in commands[1:]:
            await eventually(functools.partial(done, exchange_pool, command.key))
    assert at_once.rounds == [[commands[0].key], [c.key for c in commands[1:]]]
