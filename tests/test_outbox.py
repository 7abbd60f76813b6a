"""The generic durable outbox against real PostgreSQL: backoff, final failures, crashes mid-round, two workers at
once, and the metrics it reports. Its owner here is a made-up service with a ``relay`` schema of its own."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import asyncpg
import msgspec
import pytest
from prometheus_client import REGISTRY

from shared.db import Connection, create_pool
from shared.outbox import Backoff, Handler, Outbox, Retry, Sent, Worker

# The shape every outbox table has (the exchange's is created by its migration 0002).
_DDL = """
CREATE SCHEMA relay;
CREATE TABLE relay.outbox (
    key text PRIMARY KEY, kind text NOT NULL, payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(), done_at timestamptz, outcome bytea, last_error text,
    CHECK ((done_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX outbox_pending ON relay.outbox (next_attempt_at) WHERE done_at IS NULL;
-- What the owner records, in the outbox's transaction, for each outcome.
CREATE TABLE relay.recorded (key text NOT NULL, outcome bytea NOT NULL);
"""


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """A command the relay sends; ``behaviour`` tells the receiving side how to answer it."""

    key: str
    behaviour: Literal["ok", "refuse", "down"] = "ok"


_order = msgspec.json.Decoder(Order)


class Receiver(Handler[str]):
    """The other side, deduplicating by key as a real one must: a key acts once; a repeat answers with that act."""

    def __init__(self, *, pause: float = 0.0) -> None:
        self.sends: Counter[str] = Counter()
        self.acts: dict[str, int] = {}
        self.overlaps = 0
        self._in_flight: set[str] = set()
        self._pause = pause
        # Keys whose first send acts and then never answers (the sender dies before it hears back).
        self.hang_after_acting: set[str] = set()
        self.release = asyncio.Event()

    async def send(self, payload: bytes) -> Sent[str] | Retry:
        order = _order.decode(payload)
        self.sends[order.key] += 1
        if order.key in self._in_flight:
            self.overlaps += 1
        self._in_flight.add(order.key)
        try:
            await asyncio.sleep(self._pause)
            if order.behaviour == "down":
                return Retry("the receiver is down")
            if order.behaviour == "refuse":
                return Sent(order.key, b"refused", failed=True)
            act = self.acts.setdefault(order.key, len(self.acts))
            if order.key in self.hang_after_acting:
                self.hang_after_acting.discard(order.key)
                await self.release.wait()
            return Sent(order.key, f"act {act}".encode())
        finally:
            self._in_flight.discard(order.key)

    async def record(self, conn: Connection, sent: Sent[str]) -> None:
        await conn.execute("INSERT INTO relay.recorded (key, outcome) VALUES ($1, $2)", sent.value, sent.stored)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=6)
    try:
        await pool.execute(_DDL)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def relay() -> Outbox:
    """An outbox on relay.outbox with an owner name of its own, so the test reads only its own metrics."""
    return Outbox("relay.outbox", owner=f"relay-{secrets.token_hex(4)}")


async def enqueue(pool: asyncpg.Pool, relay: Outbox, *orders: Order) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for order in orders:
            await relay.enqueue(conn, order.key, "relay.order.v1", msgspec.json.encode(order))


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds (the worker runs in the background)."""
    async with asyncio.timeout(30):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def recorded(pool: asyncpg.Pool) -> Counter[str]:
    return Counter(r["key"] for r in await pool.fetch("SELECT key FROM relay.recorded"))


def metric(name: str, relay: Outbox, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"outbox": relay.owner, **labels})


async def test_an_outbox_table_name_must_be_a_plain_schema_qualified_identifier() -> None:
    for bad in ("outbox", "relay.outbox; DROP TABLE x", 'relay."outbox"', "Relay.Outbox", "a.b.c"):
        with pytest.raises(ValueError, match="schema-qualified"):
            Outbox(bad, owner="relay")


async def test_a_key_enqueued_twice_keeps_its_first_command(pool: asyncpg.Pool, relay: Outbox) -> None:
    await enqueue(pool, relay, Order(key="k1"))
    sql, args = relay.enqueue_rows(["k1", "k2"], ["relay.order.v1"] * 2, [b"{}", msgspec.json.encode(Order(key="k2"))])
    await pool.execute(sql, *args)

    async with pool.acquire() as conn:
        first, second = await relay.entry(conn, "k1"), await relay.entry(conn, "k2")
    assert first is not None
    assert second is not None
    assert _order.decode(first.payload) == Order(key="k1")
    assert (second.kind, second.attempts, second.done_at) == ("relay.order.v1", 0, None)


async def test_retries_back_off_exponentially_up_to_the_cap(pool: asyncpg.Pool, relay: Outbox) -> None:
    backoff = Backoff(base=0.1, cap=0.4, jitter=0.5)
    worker = Worker(pool, relay, Receiver(), backoff=backoff)
    await enqueue(pool, relay, Order(key="down", behaviour="down"))

    delays = []
    for attempt in range(5):
        before = await pool.fetchval("SELECT clock_timestamp()")
        assert await worker.round() == 1
        after = await pool.fetchval("SELECT clock_timestamp()")
        async with pool.acquire() as conn:
            row = await relay.entry(conn, "down")
        assert row is not None
        assert (row.attempts, row.done_at, row.last_error) == (attempt + 1, None, "the receiver is down")
        full = min(0.4, 0.1 * 2**attempt)
        delay = (row.next_attempt_at - before).total_seconds()
        slack = (after - before).total_seconds()
        # Jitter takes off up to half the delay, never adds to it.
        assert full * 0.5 <= delay <= full + slack, (attempt, delay)
        delays.append(delay)
        # Not due before its time: a round now claims nothing.
        assert await worker.round() == 0
        await asyncio.sleep(max(0.0, (row.next_attempt_at - after).total_seconds()) + 0.01)

    assert delays[1] > delays[0] * 0.99
    assert max(delays[2:]) <= 0.4 + 0.05


async def test_a_final_failure_is_recorded_once_and_never_sent_again(pool: asyncpg.Pool, relay: Outbox) -> None:
    receiver = Receiver()
    worker = Worker(pool, relay, receiver, poll_interval=0.05, backoff=Backoff(base=0.01, cap=0.02))
    await enqueue(pool, relay, Order(key="no", behaviour="refuse"))

    worker.start()
    try:
        worker.wake()
        await eventually(lambda: pool.fetchval("SELECT done_at IS NOT NULL FROM relay.outbox WHERE key = 'no'"))
        await asyncio.sleep(0.3)  # rounds keep coming: none takes the row again
    finally:
        await worker.stop()

    assert receiver.sends["no"] == 1
    assert await recorded(pool) == Counter({"no": 1})
    async with pool.acquire() as conn:
        row = await relay.entry(conn, "no")
    assert row is not None
    assert (row.outcome, row.attempts, row.last_error) == (b"refused", 1, None)
    assert metric("timebank_outbox_sent_total", relay, result="failed") == 1
    assert metric("timebank_outbox_sent_total", relay, result="done") in (None, 0)


async def test_a_round_cut_off_by_a_crash_is_sent_again_and_recorded_once(
    pool: asyncpg.Pool, relay: Outbox, database_url: str
) -> None:
    receiver = Receiver()
    receiver.hang_after_acting.add("once")
    await enqueue(pool, relay, Order(key="once"))
    doomed_pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=1, server_settings={"application_name": "doomed-outbox"}
    )
    assert doomed_pool is not None
    doomed = Worker(doomed_pool, relay, receiver)
    cut_off = asyncio.create_task(doomed.round())
    try:
        # The receiver acted, but its answer never reaches the doomed worker, whose process then dies.
        async def acted() -> bool:
            return receiver.sends["once"] == 1

        await eventually(acted)
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'doomed-outbox'"
        )
        survivor = Worker(pool, relay, receiver, poll_interval=0.05)
        survivor.start()
        try:
            await eventually(lambda: pool.fetchval("SELECT done_at IS NOT NULL FROM relay.outbox WHERE key = 'once'"))
        finally:
            await survivor.stop()
    finally:
        receiver.release.set()
        with contextlib.suppress(Exception):
            await cut_off
        doomed_pool.terminate()

    assert receiver.sends["once"] == 2
    assert receiver.acts == {"once": 0}
    assert await recorded(pool) == Counter({"once": 1})
    async with pool.acquire() as conn:
        row = await relay.entry(conn, "once")
    assert row is not None
    # The cut-off attempt left nothing behind: only the survivor's committed.
    assert (row.outcome, row.attempts) == (b"act 0", 1)


async def test_two_workers_never_send_the_same_row_at_once(
    pool: asyncpg.Pool, relay: Outbox, database_url: str
) -> None:
    receiver = Receiver(pause=0.005)
    await enqueue(pool, relay, *(Order(key=f"k{i:03}") for i in range(120)))
    other_pool = await create_pool(database_url, min_size=1, max_size=4)
    one = Worker(pool, relay, receiver, lanes=2, batch_size=10, poll_interval=0.05)
    two = Worker(other_pool, relay, receiver, lanes=2, batch_size=10, poll_interval=0.05)
    try:
        one.start()
        two.start()
        await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM relay.outbox WHERE done_at IS NULL"))
    finally:
        await one.stop()
        await two.stop()
        await other_pool.close()

    assert receiver.overlaps == 0
    assert set(receiver.sends.values()) == {1}
    assert len(receiver.sends) == 120
    assert await recorded(pool) == Counter({f"k{i:03}": 1 for i in range(120)})


async def test_metrics_show_the_backlog_its_oldest_row_and_the_retries(pool: asyncpg.Pool, relay: Outbox) -> None:
    worker = Worker(pool, relay, Receiver(), backoff=Backoff(base=60, cap=60))
    await enqueue(pool, relay, Order(key="a"), Order(key="b", behaviour="down"), Order(key="c", behaviour="down"))
    await asyncio.sleep(0.3)

    assert await worker.round() == 3
    assert metric("timebank_outbox_backlog", relay) == 3  # as the round found it
    oldest = metric("timebank_outbox_oldest_age_seconds", relay)
    assert oldest is not None
    assert oldest >= 0.25
    assert metric("timebank_outbox_retries_total", relay) == 2
    assert metric("timebank_outbox_sent_total", relay, result="done") == 1
    assert metric("timebank_outbox_sent_total", relay, result="retry") == 2

    # The next round finds the two waiting for their retry (not due for a minute) and nothing to send.
    assert await worker.round() == 0
    assert metric("timebank_outbox_backlog", relay) == 2
    later = metric("timebank_outbox_oldest_age_seconds", relay)
    assert later is not None
    assert later >= oldest
    assert metric("timebank_outbox_retries_total", relay) == 2


class BatchReceiver(Receiver):
    """A receiver that takes a round's orders in one call, as a batch endpoint does; ``fail_next`` calls raise."""

    sends_many = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail_next = 0
        self.short_next = 0

    async def send_many(self, payloads: list[bytes]) -> list[Sent[str] | Retry]:
        self.calls.append(len(payloads))
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("the receiver hung up")
        outcomes = [await self.send(payload) for payload in payloads]
        if self.short_next:
            self.short_next -= 1
            return outcomes[:-1]  # a broken answer: one outcome missing
        return outcomes


async def test_a_handler_that_sends_many_gets_each_round_in_one_call(pool: asyncpg.Pool, relay: Outbox) -> None:
    receiver = BatchReceiver()
    worker = Worker(pool, relay, receiver, batch_size=50)
    await enqueue(pool, relay, *(Order(key=f"b{n}") for n in range(120)), Order(key="no", behaviour="refuse"))

    assert [await worker.round() for _ in range(4)] == [50, 50, 21, 0]
    assert receiver.calls == [50, 50, 21]
    assert await recorded(pool) == Counter({f"b{n}": 1 for n in range(120)} | {"no": 1})
    assert metric("timebank_outbox_sent_total", relay, result="done") == 120
    assert metric("timebank_outbox_sent_total", relay, result="failed") == 1


@pytest.mark.parametrize("fault", ["raises", "short"])
async def test_a_round_sent_at_once_that_fails_is_retried_whole_and_recorded_once(
    pool: asyncpg.Pool, relay: Outbox, fault: str
) -> None:
    receiver = BatchReceiver()
    if fault == "raises":
        receiver.fail_next = 1
    else:
        receiver.short_next = 1
    worker = Worker(pool, relay, receiver, backoff=Backoff(base=0.01, cap=0.01, jitter=0.0))
    await enqueue(pool, relay, *(Order(key=f"r{n}") for n in range(10)))

    assert await worker.round() == 10
    assert await recorded(pool) == Counter()
    assert metric("timebank_outbox_retries_total", relay) == 10
    await asyncio.sleep(0.05)
    assert await worker.round() == 10
    assert await recorded(pool) == Counter({f"r{n}": 1 for n in range(10)})
