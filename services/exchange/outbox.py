"""The durable outbox: commands the exchange decided to send to the ledger, sent until their outcome is recorded.

The exchange writes a command with ``enqueue`` in the same transaction as the event that decided it, so a crash
can lose neither the decision nor the command. An ``OutboxWorker`` sends pending commands to the ledger, keyed by
the command's idempotency key, and records each answer with the exchange's ``on_outcome`` callback in the same
transaction that marks the row done. A command may therefore be *sent* more than once (a crash after the ledger
committed but before the outcome was recorded), but the ledger deduplicates by key and answers a repeat with the
original (``replayed``), so there is exactly one ledger entry, and ``on_outcome`` commits exactly once.

How a round works, and why: a round takes one connection and one transaction. It claims up to ``batch_size``
due rows with ``FOR UPDATE SKIP LOCKED``, sends them to the ledger concurrently while *holding those row locks*,
then records every answer in the same transaction and commits once. With an ``on_outcomes`` callback the answers
are recorded all at once (one savepoint for them all, a few round trips whatever their number); if that fails,
or without it, each is recorded in a savepoint of its own. Holding the locks
across the HTTP call is what keeps two workers (or two exchange processes) from sending the same row at once, with
no lease to tune; the cost is one connection per round in flight and locks held for at most the client's timeout.
If the process dies mid-round, PostgreSQL aborts the transaction, the locks go, and the next round (anywhere)
sends the rows again, which the ledger answers as replays. One commit per round keeps the cost per command low.

The SQL sits in this module because the outbox is its only user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from services.exchange.writes import Write
from services.ledger.client import (
    AccountKind,
    LedgerClient,
    LedgerRefused,
    LedgerUnavailable,
    OpenedAccount,
    PostedTransfer,
)
from shared.db import Connection

log = logging.getLogger(__name__)


def _is_final(refusal: LedgerRefused) -> bool:
    """Whether the ledger refused the command itself, not the way it was reached.

    A wrong token (401, 403) or a wrong address (a 404 or 405 that is not the ledger's own "not-found" about an
    account or transfer) is an operator's mistake: once fixed, the command goes through, so it is retried like an
    unavailable ledger rather than recorded as the command's outcome.
    """
    if refusal.status in (401, 403):
        return False
    return not (refusal.status in (404, 405) and refusal.slug != "not-found")


# ---- Commands (stored in the outbox: frozen, tagged, additive evolution only) ----


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    # The ledger's idempotency key; also the outbox row's key.
    key: str
    # The exchange's event stream whose outcome this is (e.g. 'member-mem_…', 'exchange-ex_…'), for on_outcome.
    stream: str | None = None


class OpenLedgerAccount(Command, frozen=True, kw_only=True, tag="exchange.outbox.open-account.v1"):
    """Open a ledger account (a member's on approval, or the community pot)."""

    kind: AccountKind = "member"
    # None: the ledger's default (the network's member floor; 0 for the pot).
    floor: int | None = None
    ceiling: int | None = None
    # The exchange member the account is for; None for the community pot.
    member: str | None = None


class PostTransfer(Command, frozen=True, kw_only=True, tag="exchange.outbox.transfer.v1"):
    """Post one ledger transfer (receiver pays provider, a payment, a donation, a grant)."""

    payer: str  # ledger account ids
    payee: str
    minutes: int
    # SHA-256(salt || memo), hex; the memo and salt stay in the exchange.
    memo_digest: str | None = None
    # Public reference carried into the ledger's entry.
    exchange_ref: str | None = None
    # Which line of a group exchange this transfer settles.
    line: int | None = None


OutboxCommand = OpenLedgerAccount | PostTransfer


# ---- Outcomes (stored with the row once recorded) ----


class Outcome(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Delivered(Outcome, frozen=True, kw_only=True, tag="exchange.outbox.delivered.v1"):
    """The ledger did it (``result.replayed``: on an earlier send, whose answer was lost)."""

    result: OpenedAccount | PostedTransfer


class Refused(Outcome, frozen=True, kw_only=True, tag="exchange.outbox.refused.v1"):
    """The ledger said no for good (insufficient hours, closed or unknown account, key conflict, invalid)."""

    status: int
    problem: dict[str, Any]

    @property
    def reason(self) -> str:
        """The problem type's slug, e.g. ``insufficient-hours``."""
        kind = self.problem.get("type")
        return kind.rsplit("/", 1)[-1] if isinstance(kind, str) and kind else f"http-{self.status}"


AnyOutcome = Delivered | Refused
OnOutcome = Callable[[Connection, OutboxCommand, AnyOutcome], Awaitable[None]]
# Records many answers at once, as ``on_outcome`` would one by one, all or nothing (it may raise); the Write marks
# their rows done, for the callback to send with its own writes (in one statement, say).
OnOutcomes = Callable[[Connection, list[tuple[OutboxCommand, AnyOutcome]], Write], Awaitable[None]]


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row as the exchange can inspect it."""

    key: str
    command: OutboxCommand
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    done_at: datetime | None
    outcome: AnyOutcome | None
    last_error: str | None


_encoder = msgspec.json.Encoder()
_command_decoder = msgspec.json.Decoder(OutboxCommand)
_outcome_decoder = msgspec.json.Decoder(AnyOutcome)

_ENQUEUE = """
INSERT INTO exchange.outbox (key, kind, payload) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING
"""
_ENQUEUE_MANY = """
INSERT INTO exchange.outbox (key, kind, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) ON CONFLICT (key) DO NOTHING
"""
_CLAIM = """
SELECT key, payload, attempts FROM exchange.outbox
WHERE done_at IS NULL AND next_attempt_at <= now()
ORDER BY next_attempt_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_DONE = """
UPDATE exchange.outbox SET done_at = clock_timestamp(), outcome = $2, attempts = attempts + 1 WHERE key = $1
"""
_DONE_MANY = """
UPDATE exchange.outbox AS o SET done_at = clock_timestamp(), outcome = f.outcome, attempts = o.attempts + 1
FROM unnest($1::text[], $2::bytea[]) AS f (key, outcome)
WHERE o.key = f.key
"""
_RETRY = """
UPDATE exchange.outbox AS o
SET attempts = o.attempts + 1,
    last_error = f.error,
    next_attempt_at = clock_timestamp() + make_interval(secs => f.delay)
FROM unnest($1::text[], $2::text[], $3::float8[]) AS f (key, error, delay)
WHERE o.key = f.key
"""
_ENTRY = """
SELECT key, payload, created_at, attempts, next_attempt_at, done_at, outcome, last_error
FROM exchange.outbox WHERE key = $1
"""
QUERIES = {
    "enqueue": _ENQUEUE,
    "enqueue_many": _ENQUEUE_MANY,
    "claim": _CLAIM,
    "done": _DONE,
    "done_many": _DONE_MANY,
    "retry": _RETRY,
    "entry": _ENTRY,
}


async def enqueue(conn: Connection, command: OutboxCommand) -> None:
    """Add ``command`` to the outbox; call it in the transaction that records the decision.

    A command whose key is already in the outbox (a duplicate decision) is ignored: the first one stands.
    Call ``OutboxWorker.wake()`` after the transaction commits to have it sent at once.
    """
    tag = type(command).__struct_config__.tag
    await conn.execute(_ENQUEUE, command.key, tag, _encoder.encode(command))


def enqueue_write(commands: list[OutboxCommand]) -> Write:
    """``enqueue`` for several commands, as a write to send with the events that decided them."""
    return Write(
        _ENQUEUE_MANY,
        (
            [c.key for c in commands],
            [type(c).__struct_config__.tag for c in commands],
            [_encoder.encode(c) for c in commands],
        ),
        rows=True,
    )


async def entry(conn: Connection, key: str) -> OutboxEntry | None:
    """The outbox row for ``key``: its command, attempts, and outcome once recorded."""
    row = await conn.fetchrow(_ENTRY, key)
    if row is None:
        return None
    outcome = row["outcome"]
    return OutboxEntry(
        key=row["key"],
        command=_command_decoder.decode(row["payload"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        done_at=row["done_at"],
        outcome=None if outcome is None else _outcome_decoder.decode(outcome),
        last_error=row["last_error"],
    )


class _Failed(msgspec.Struct, frozen=True):
    """A send without a recordable outcome: the row is tried again later."""

    error: str


class OutboxWorker:
    """Sends pending outbox rows to the ledger and records each outcome exactly once.

    ``wake()`` after committing an enqueue sends it at once; otherwise every lane polls each ``poll_interval``
    seconds, which also picks up retries that fell due and rows a crashed process left behind. A command without
    an answer is retried with exponential backoff (``backoff_base`` doubling up to ``backoff_max`` seconds) and never
    dropped. ``lanes`` rounds may be in flight at once (each holds one connection), and at most ``max_in_flight``
    ledger requests. ``on_outcomes``, if given, records a round's answers at once (``on_outcome`` is the fallback).

    ``linger``: rounds started by wake-ups start at least this far apart; a lane woken sooner waits, and its round
    takes the rows enqueued meanwhile too (one lane lingers at a time; the others stay free to start rounds). Under
    load that makes rounds fewer and larger, each costing a few round trips to the database whatever its size, for
    at most ``linger`` of latency; after a quiet spell a wake-up starts a round at once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: LedgerClient,
        on_outcome: OnOutcome,
        *,
        on_outcomes: OnOutcomes | None = None,
        batch_size: int = 200,
        max_in_flight: int = 64,
        lanes: int = 2,
        poll_interval: float = 1.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        if batch_size < 1 or max_in_flight < 1 or lanes < 1:
            raise ValueError("batch_size, max_in_flight and lanes must be at least 1")
        self._pool = pool
        self._client = client
        self._on_outcome = on_outcome
        self._on_outcomes = on_outcomes
        self._batch_size = batch_size
        self._sending = asyncio.Semaphore(max_in_flight)
        self._lanes = lanes
        self._poll_interval = poll_interval
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._linger = linger
        self._lingering = False
        self._last_start = float("-inf")
        self._signal = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the lanes; the first round runs at once, so rows left by a crashed process go out now."""
        if self._tasks:
            raise RuntimeError("the outbox worker is already running")
        self._stopping = False
        self._tasks = [asyncio.create_task(self._lane(), name=f"outbox-lane-{i}") for i in range(self._lanes)]

    def wake(self) -> None:
        """Have a lane look for due rows now (cheap; call it after each committed enqueue)."""
        if not self._lingering:  # a lingering lane has yet to claim: it takes the new rows too
            self._signal.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the rounds in flight (their sends and outcomes), then stop; cancel them after ``grace`` s."""
        if not self._tasks:
            return
        self._stopping = True
        self._signal.set()
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
                claimed = await self._round()
            except Exception:
                # The database went away mid-round: the transaction is gone, the rows are pending again.
                log.exception("outbox round failed; its rows will be sent again")
                claimed = 0
            if claimed < self._batch_size:
                await self._idle()

    async def _idle(self) -> None:
        """Wait for a wake-up (taken by one lane only), the next poll, or stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._poll_interval
        while not self._stopping:
            if self._signal.is_set():
                self._signal.clear()
                await self._spaced(loop)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._signal.wait()

    async def _spaced(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under load, start a round no sooner than ``linger`` after the last one started (in any lane), so that it
        takes every row enqueued meanwhile; after a quiet spell, start at once."""
        delay = self._last_start + self._linger - loop.time()
        if delay > 0 and not self._stopping:
            self._lingering = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._lingering = False
        self._last_start = loop.time()

    async def _round(self) -> int:
        """Claim, send and record one batch; returns how many rows it claimed."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._batch_size)
            if not rows:
                return 0
            sent = await asyncio.gather(*(self._send(row["payload"]) for row in rows))
            recorded = await self._record_at_once(conn, rows, sent)
            retry_keys: list[str] = []
            retry_errors: list[str] = []
            retry_delays: list[float] = []
            for row, (command, outcome) in zip(rows, sent, strict=True):
                if recorded and command is not None and not isinstance(outcome, _Failed):
                    continue
                if command is not None and not isinstance(outcome, _Failed):
                    try:
                        async with conn.transaction():
                            await self._on_outcome(conn, command, outcome)
                            await conn.execute(_DONE, row["key"], _encoder.encode(outcome))
                        continue
                    except Exception as exc:
                        log.exception("recording the outcome of %s failed; it will be sent again", row["key"])
                        outcome = _Failed(f"recording the outcome failed: {type(exc).__name__}: {exc}")
                assert isinstance(outcome, _Failed)
                retry_keys.append(row["key"])
                retry_errors.append(outcome.error)
                retry_delays.append(min(self._backoff_max, self._backoff_base * 2.0 ** min(row["attempts"], 30)))
            if retry_keys:
                log.warning("%d ledger command(s) will be retried; first error: %s", len(retry_keys), retry_errors[0])
                await conn.execute(_RETRY, retry_keys, retry_errors, retry_delays)
            return len(rows)

    async def _record_at_once(
        self, conn: Connection, rows: list[Any], sent: list[tuple[OutboxCommand | None, AnyOutcome | _Failed]]
    ) -> bool:
        """Record every answer of the round with ``on_outcomes`` in one savepoint; False if it is not done."""
        answered = [
            (row["key"], command, outcome)
            for row, (command, outcome) in zip(rows, sent, strict=True)
            if command is not None and not isinstance(outcome, _Failed)
        ]
        if self._on_outcomes is None or not answered:
            return False
        try:
            done = Write(
                _DONE_MANY,
                ([key for key, _, _ in answered], [_encoder.encode(outcome) for _, _, outcome in answered]),
                rows=True,
            )
            async with conn.transaction():
                await self._on_outcomes(conn, [(command, outcome) for _, command, outcome in answered], done)
        except Exception:
            # A race with a command on one of the streams, say: each answer is recorded on its own instead.
            log.info("recording %d outcomes at once failed; recording them one by one", len(answered), exc_info=True)
            return False
        return True

    async def _send(self, payload: bytes) -> tuple[OutboxCommand | None, AnyOutcome | _Failed]:
        try:
            command = _command_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            # Written by a newer version of the exchange, perhaps: keep it for that version to send.
            return None, _Failed(f"cannot read the command: {exc}")
        try:
            async with self._sending:
                if isinstance(command, OpenLedgerAccount):
                    result: OpenedAccount | PostedTransfer = await self._client.open_account(
                        command.key, command.kind, floor=command.floor, ceiling=command.ceiling
                    )
                else:
                    result = await self._client.transfer(
                        command.key,
                        command.payer,
                        command.payee,
                        command.minutes,
                        memo_digest=command.memo_digest,
                        exchange_ref=command.exchange_ref,
                    )
        except LedgerRefused as exc:
            if not _is_final(exc):
                return command, _Failed(str(exc))
            return command, Refused(status=exc.status, problem=exc.problem)
        except LedgerUnavailable as exc:
            return command, _Failed(str(exc))
        except Exception as exc:
            log.exception("sending %s to the ledger failed unexpectedly", command.key)
            return command, _Failed(f"{type(exc).__name__}: {exc}")
        return command, Delivered(result=result)
