"""A durable outbox: commands a service decided to send to another, kept in its own table until an outcome is recorded.

The owner enqueues a command in the same transaction as the decision that made it (``Outbox.enqueue``, or
``Outbox.enqueue_rows`` as a statement to send with its own writes), so a crash loses neither. A ``Worker`` sends
pending rows through the owner's ``Handler`` and records each outcome with the handler in the transaction that
marks the row done. A command may be *sent* more than once (a crash after the other side acted but before the
outcome was recorded), so the receiving side must deduplicate by the row's key; the outcome commits exactly once.

How a round works, and why: a round takes one connection and one transaction. It claims up to ``batch_size`` due
rows with ``FOR UPDATE SKIP LOCKED``, sends them concurrently while *holding those row locks*, then records every
outcome in the same transaction and commits once. A handler that ``records_many`` records them all at once (one
savepoint for them all); if that fails, or without it, each is recorded in a savepoint of its own. Holding the
locks across the send is what keeps two workers (or two processes) from sending the same row at once, with no
lease to tune; the cost is one connection per round in flight and locks held for at most the handler's timeout.
If the process dies mid-round, PostgreSQL aborts the transaction, the locks go, and the next round (anywhere)
sends the rows again. A send without an outcome is retried with exponential backoff, capped and jittered, never
dropped. One commit per round keeps the cost per command low.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge

from shared.db import Connection, database_lost, load_queries

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# A schema-qualified table name: the only text that is ever put into the outbox's SQL.
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
_SQL = load_queries(Path(__file__).with_name("outbox.sql"))

# One set of metrics for the process (the default registry), one series per owner (``outbox`` label).
BACKLOG = Gauge("timebank_outbox_backlog", "Rows waiting to be sent or retried, as the last round saw them", ["outbox"])
OLDEST_AGE = Gauge(
    "timebank_outbox_oldest_age_seconds", "Age of the oldest row still waiting, as the last round saw it", ["outbox"]
)
RETRIES = Counter("timebank_outbox_retries", "Rows put back for a later attempt (no outcome recorded)", ["outbox"])
SENT = Counter(
    "timebank_outbox_sent", "Rows sent, by what came of it: done, failed (for good) or retry", ["outbox", "result"]
)


class Statement(NamedTuple):
    """One SQL statement and its arguments, for the owner to send with its own writes."""

    sql: str
    args: tuple[Any, ...]


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row as stored: the command's bytes, its attempts, and its outcome's bytes once recorded."""

    key: str
    kind: str
    payload: bytes
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    done_at: datetime | None
    outcome: bytes | None
    last_error: str | None


class Outbox:
    """One owner's outbox table (e.g. ``exchange.outbox``) and the statements on it."""

    def __init__(self, table: str, *, owner: str) -> None:
        if not _TABLE.match(table):
            raise ValueError(f"not a schema-qualified table name: {table!r}")
        self.table = table
        self.owner = owner
        self.queries = {name: sql.replace("{table}", table) for name, sql in _SQL.items()}

    async def enqueue(self, conn: Connection, key: str, kind: str, payload: bytes) -> None:
        """Add a command, in the caller's transaction; a key already there is ignored (the first one stands)."""
        await conn.execute(self.queries["enqueue"], key, kind, payload)

    def enqueue_rows(self, keys: Sequence[str], kinds: Sequence[str], payloads: Sequence[bytes]) -> Statement:
        """``enqueue`` for several commands, as a statement (one list per column) to send with the caller's writes."""
        return Statement(self.queries["enqueue_many"], (list(keys), list(kinds), list(payloads)))

    async def entry(self, conn: Connection, key: str) -> Row | None:
        """The row for ``key``, as stored."""
        row = await conn.fetchrow(self.queries["entry"], key)
        return None if row is None else Row(**dict(row.items()))


@dataclass(frozen=True, slots=True)
class Sent(Generic[_T]):
    """A send with an outcome to record: ``value`` for the handler, ``stored`` kept with the row.

    ``failed``: the other side refused the command for good; it is recorded (and never sent again) all the same.
    """

    value: _T
    stored: bytes
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A send without a recordable outcome: the row is tried again later."""

    error: str


class Handler(abc.ABC, Generic[_T]):
    """What an owner gives its worker: how to send a stored command, and how to record what came of it."""

    # Whether ``record_many`` records a whole round's outcomes at once.
    records_many: bool = False
    # Whether ``send_many`` sends a whole round's commands at once (one request for them all, say).
    sends_many: bool = False

    @abc.abstractmethod
    async def send(self, payload: bytes) -> Sent[_T] | Retry:
        """Send the command stored as ``payload`` (called while its row is locked; may raise, meaning retry)."""

    @abc.abstractmethod
    async def record(self, conn: Connection, sent: Sent[_T]) -> None:
        """Record one outcome in the round's transaction (in a savepoint; raising puts the row back for a retry)."""

    async def record_many(self, conn: Connection, sent: list[Sent[_T]], done: Statement) -> None:
        """Record every outcome at once, all or nothing, and run ``done`` (which marks their rows done) with them."""
        raise NotImplementedError

    async def send_many(self, payloads: list[bytes]) -> list[Sent[_T] | Retry]:
        """Send a round's commands at once: one outcome per payload, in order (may raise, meaning retry them all)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``base`` doubling per attempt up to ``cap`` seconds, then jittered down by up to
    ``jitter`` of it (so retries of rows that failed together spread out, and delays never shrink attempt to attempt
    while below the cap)."""

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt of a row already tried ``attempts`` times."""
        full = min(self.cap, self.base * 2.0 ** min(attempts, 30))
        return full * (1.0 - self.jitter * random.random())


class Wakeup:
    """A wake-up call for a worker, made first and given both to the worker and to whoever enqueues."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        # While a lingering lane has yet to claim, a wake-up is already answered: its round takes the new rows too.
        self._held = False

    def set(self) -> None:
        """Have a lane look for due rows now (cheap; call it after each committed enqueue)."""
        if not self._held:
            self._event.set()

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        self._held = True
        try:
            yield
        finally:
            self._held = False


class Worker(Generic[_T]):
    """Sends pending rows of ``outbox`` through ``handler`` and records each outcome exactly once.

    A wake-up (``wake()``, or ``wakeup.set()``) after committing an enqueue sends it at once; otherwise every lane
    polls each ``poll_interval`` seconds, which also picks up retries that fell due and rows a crashed process left
    behind. ``lanes`` rounds may be in flight at once (each holds one connection), and at most ``max_in_flight``
    sends. ``linger``: rounds started by wake-ups start at least this far apart; a lane woken sooner waits, and its
    round takes the rows enqueued meanwhile too (one lane lingers at a time). Under load that makes rounds fewer and
    larger, for at most ``linger`` of latency; after a quiet spell a wake-up starts a round at once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        handler: Handler[_T],
        *,
        wakeup: Wakeup | None = None,
        batch_size: int = 200,
        max_in_flight: int = 64,
        lanes: int = 2,
        poll_interval: float = 1.0,
        backoff: Backoff = Backoff(),
        linger: float = 0.0,
    ) -> None:
        if batch_size < 1 or max_in_flight < 1 or lanes < 1:
            raise ValueError("batch_size, max_in_flight and lanes must be at least 1")
        self._pool = pool
        self._outbox = outbox
        self._handler = handler
        self.wakeup = wakeup or Wakeup()
        self._batch_size = batch_size
        self._sending = asyncio.Semaphore(max_in_flight)
        self._lanes = lanes
        self._poll_interval = poll_interval
        self._backoff = backoff
        self._linger = linger
        self._last_start = float("-inf")
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        owner = outbox.owner
        self._backlog, self._oldest, self._retries = (
            BACKLOG.labels(owner),
            OLDEST_AGE.labels(owner),
            RETRIES.labels(owner),
        )
        self._sent = {result: SENT.labels(owner, result) for result in ("done", "failed", "retry")}

    def start(self) -> None:
        """Start the lanes; the first round runs at once, so rows left by a crashed process go out now."""
        if self._tasks:
            raise RuntimeError("the outbox worker is already running")
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._lane(), name=f"{self._outbox.owner}-outbox-lane-{i}") for i in range(self._lanes)
        ]

    def wake(self) -> None:
        """Have a lane look for due rows now (the same as ``wakeup.set()``)."""
        self.wakeup.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the rounds in flight (their sends and outcomes), then stop; cancel them after ``grace`` s."""
        if not self._tasks:
            return
        self._stopping = True
        self.wakeup._event.set()
        tasks, self._tasks = self._tasks, []
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _lane(self) -> None:
        while not self._stopping:
            try:
                claimed = await self.round()
            except Exception as exc:
                # The database went away mid-round: the transaction is gone, the rows are pending again.
                if database_lost(exc):  # expected while it restarts: one line, not a traceback a second
                    log.warning("%s outbox waits for the database (%s)", self._outbox.owner, exc)
                else:
                    log.exception("%s outbox round failed; its rows will be sent again", self._outbox.owner)
                claimed = 0
            if claimed < self._batch_size:
                await self._idle()

    async def _idle(self) -> None:
        """Wait for a wake-up (taken by one lane only), the next poll, or stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._poll_interval
        event = self.wakeup._event
        while not self._stopping:
            if event.is_set():
                event.clear()
                await self._spaced(loop)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()

    async def _spaced(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under load, start a round no sooner than ``linger`` after the last one started (in any lane), so that it
        takes every row enqueued meanwhile; after a quiet spell, start at once."""
        delay = self._last_start + self._linger - loop.time()
        if delay > 0 and not self._stopping:
            with self.wakeup._holding():
                await asyncio.sleep(delay)
        self._last_start = loop.time()

    async def round(self) -> int:
        """Claim, send and record one batch, and update the backlog gauges; returns how many rows it claimed."""
        queries = self._outbox.queries
        results = {"done": 0, "failed": 0, "retry": 0}
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetch(queries["claim"], self._batch_size)
            self._backlog.set(found[0]["pending"])
            self._oldest.set(found[0]["oldest_age"])
            rows = [row for row in found if row["key"] is not None]
            if not rows:
                return 0
            if self._handler.sends_many:
                sent = await self._send_many([row["payload"] for row in rows])
            else:
                sent = await asyncio.gather(*(self._send(row["payload"]) for row in rows))
            recorded = await self._record_at_once(conn, rows, sent)
            retry_keys: list[str] = []
            retry_errors: list[str] = []
            retry_delays: list[float] = []
            for row, outcome in zip(rows, sent, strict=True):
                if isinstance(outcome, Sent):
                    if not recorded:
                        try:
                            async with conn.transaction():
                                await self._handler.record(conn, outcome)
                                await conn.execute(queries["done"], row["key"], outcome.stored)
                        except Exception as exc:
                            log.exception("recording the outcome of %s failed; it will be sent again", row["key"])
                            outcome = Retry(f"recording the outcome failed: {type(exc).__name__}: {exc}")
                    if isinstance(outcome, Sent):
                        results["failed" if outcome.failed else "done"] += 1
                        continue
                retry_keys.append(row["key"])
                retry_errors.append(outcome.error)
                retry_delays.append(self._backoff.delay(row["attempts"]))
            if retry_keys:
                log.warning(
                    "%d %s outbox row(s) will be retried; first error: %s",
                    len(retry_keys),
                    self._outbox.owner,
                    retry_errors[0],
                )
                await conn.execute(queries["retry"], retry_keys, retry_errors, retry_delays)
                results["retry"] = len(retry_keys)
        # Counted once committed: a round whose transaction was lost did nothing.
        for result, count in results.items():
            if count:
                self._sent[result].inc(count)
        if results["retry"]:
            self._retries.inc(results["retry"])
        return len(rows)

    async def _record_at_once(self, conn: Connection, rows: list[Any], sent: list[Sent[_T] | Retry]) -> bool:
        """Record every outcome of the round with ``record_many`` in one savepoint; False if it is not done."""
        answered = [(row["key"], s) for row, s in zip(rows, sent, strict=True) if isinstance(s, Sent)]
        if not self._handler.records_many or not answered:
            return False
        done = Statement(self._outbox.queries["done_many"], ([k for k, _ in answered], [s.stored for _, s in answered]))
        try:
            async with conn.transaction():
                await self._handler.record_many(conn, [s for _, s in answered], done)
        except Exception:
            # A race with a command on one of the rows' subjects, say: each outcome is recorded on its own instead.
            log.info("recording %d outcomes at once failed; recording them one by one", len(answered), exc_info=True)
            return False
        return True

    async def _send_many(self, payloads: list[bytes]) -> list[Sent[_T] | Retry]:
        try:
            sent = await self._handler.send_many(payloads)
        except Exception as exc:
            log.exception("sending %d %s outbox rows failed unexpectedly", len(payloads), self._outbox.owner)
            return [Retry(f"{type(exc).__name__}: {exc}")] * len(payloads)
        if len(sent) != len(payloads):
            return [Retry(f"the handler answered {len(sent)} outcomes for {len(payloads)} rows")] * len(payloads)
        return sent

    async def _send(self, payload: bytes) -> Sent[_T] | Retry:
        try:
            async with self._sending:
                return await self._handler.send(payload)
        except Exception as exc:
            log.exception("sending a %s outbox row failed unexpectedly", self._outbox.owner)
            return Retry(f"{type(exc).__name__}: {exc}")
