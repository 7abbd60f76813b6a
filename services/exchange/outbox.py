"""The exchange's outbox: the commands it decided to send to the ledger, and how they are sent and answered.

The exchange writes a command with ``enqueue`` (or ``enqueue_write``) in the same transaction as the event that
decided it; an ``OutboxWorker`` (``shared.outbox.Worker`` with this module's handler) sends pending commands to
the ledger keyed by the command's idempotency key, and records each answer with the exchange's ``on_outcome``
callback in the transaction that marks the row done. A command may be *sent* more than once (a crash after the
ledger committed but before the outcome was recorded), but the ledger deduplicates by key and answers a repeat
with the original (``replayed``), so there is exactly one ledger entry, and ``on_outcome`` commits exactly once.
How rounds, locks, retries and savepoints work is ``shared.outbox``'s; this module holds what is the exchange's:
the stored command and outcome types (tags unchanged) and the mapping of commands onto ledger calls.
"""

from __future__ import annotations

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
from shared.outbox import Backoff, Handler, Outbox, Retry, Sent, Statement, Wakeup, Worker

log = logging.getLogger(__name__)


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
# Each command type's tag, stored as the row's kind.
_KIND: dict[type[Command], str] = {cls: str(cls.__struct_config__.tag) for cls in (OpenLedgerAccount, PostTransfer)}

# The exchange's outbox table (created by migrations/0002_outbox.sql).
OUTBOX = Outbox("exchange.outbox", owner="exchange")
QUERIES = OUTBOX.queries


async def enqueue(conn: Connection, command: OutboxCommand) -> None:
    """Add ``command`` to the outbox; call it in the transaction that records the decision.

    A command whose key is already in the outbox (a duplicate decision) is ignored: the first one stands.
    Wake the worker (its ``Wakeup``) after the transaction commits to have it sent at once.
    """
    await OUTBOX.enqueue(conn, command.key, _KIND[type(command)], _encoder.encode(command))


def enqueue_write(commands: list[OutboxCommand]) -> Write:
    """``enqueue`` for several commands, as a write to send with the events that decided them."""
    sql, args = OUTBOX.enqueue_rows(
        [c.key for c in commands],
        [_KIND[type(c)] for c in commands],
        [_encoder.encode(c) for c in commands],
    )
    return Write(sql, args, rows=True)


async def entry(conn: Connection, key: str) -> OutboxEntry | None:
    """The outbox row for ``key``: its command, attempts, and outcome once recorded."""
    row = await OUTBOX.entry(conn, key)
    if row is None:
        return None
    return OutboxEntry(
        key=row.key,
        command=_command_decoder.decode(row.payload),
        created_at=row.created_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        done_at=row.done_at,
        outcome=None if row.outcome is None else _outcome_decoder.decode(row.outcome),
        last_error=row.last_error,
    )


Answer = tuple[OutboxCommand, AnyOutcome]


class LedgerHandler(Handler[Answer]):
    """Sends outbox commands to the ledger and hands the answers to the exchange's callbacks."""

    def __init__(self, client: LedgerClient, on_outcome: OnOutcome, on_outcomes: OnOutcomes | None = None) -> None:
        self._client = client
        self._on_outcome = on_outcome
        self._on_outcomes = on_outcomes
        self.records_many = on_outcomes is not None

    async def send(self, payload: bytes) -> Sent[Answer] | Retry:
        try:
            command = _command_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            # Written by a newer version of the exchange, perhaps: keep it for that version to send.
            return Retry(f"cannot read the command: {exc}")
        try:
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
            if not exc.final:
                return Retry(str(exc))
            refused = Refused(status=exc.status, problem=exc.problem)
            return Sent((command, refused), _encoder.encode(refused), failed=True)
        except LedgerUnavailable as exc:
            return Retry(str(exc))
        except Exception as exc:
            log.exception("sending %s to the ledger failed unexpectedly", command.key)
            return Retry(f"{type(exc).__name__}: {exc}")
        delivered = Delivered(result=result)
        return Sent((command, delivered), _encoder.encode(delivered))

    async def record(self, conn: Connection, sent: Sent[Answer]) -> None:
        command, outcome = sent.value
        await self._on_outcome(conn, command, outcome)

    async def record_many(self, conn: Connection, sent: list[Sent[Answer]], done: Statement) -> None:
        assert self._on_outcomes is not None
        await self._on_outcomes(conn, [s.value for s in sent], Write(done.sql, done.args, rows=True))


class OutboxWorker(Worker[Answer]):
    """The exchange's outbox worker: ``shared.outbox.Worker`` on ``exchange.outbox``, sending to the ledger.

    ``on_outcomes``, if given, records a round's answers at once (``on_outcome`` is the fallback). A command
    without an answer is retried with exponential backoff (``backoff_base`` doubling up to ``backoff_max`` seconds,
    jittered). ``wakeup``: the wake-up call that the code enqueueing commands was given.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: LedgerClient,
        on_outcome: OnOutcome,
        *,
        on_outcomes: OnOutcomes | None = None,
        wakeup: Wakeup | None = None,
        batch_size: int = 200,
        max_in_flight: int = 64,
        lanes: int = 2,
        poll_interval: float = 1.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        super().__init__(
            pool,
            OUTBOX,
            LedgerHandler(client, on_outcome, on_outcomes),
            wakeup=wakeup,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            lanes=lanes,
            poll_interval=poll_interval,
            backoff=Backoff(base=backoff_base, cap=backoff_max),
            linger=linger,
        )
