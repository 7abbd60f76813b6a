"""Carrying out settlements: the federation's outbox, sent to our ledger with the federation's credential.

A decision, reversal or acceptance record is enqueued in the transaction that stores the verified entries asking for
it, so a crash loses none; the ledger deduplicates by (origin, transfer), by our transfer and by key, so sending one
twice does it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import msgspec

from services.federation import settle
from services.federation.settle import Accept, Decide, Reverse, Settlement
from services.ledger.client import (
    AcceptanceRequest,
    DecideRequest,
    LedgerClient,
    LedgerError,
    LedgerRefused,
    LedgerUnavailable,
    PostedTransfer,
    RecordedAcceptance,
    RemoteDecision,
)
from shared.db import Connection
from shared.outbox import Handler, Outbox, Retry, Sent, Statement, Wakeup, Worker

log = logging.getLogger(__name__)

OUTBOX = Outbox("federation.outbox", owner="federation")
_Request = TypeVar("_Request")
_Answer = TypeVar("_Answer")
# Decisions (or acceptance records) sent in one request: well under the ledger's limit and its body size limit.
PER_REQUEST = 100


def enqueue(found: list[Settlement]) -> Statement:
    """The statement that queues ``found``, to run in the transaction that stores the entries asking for it."""
    kinds = [str(type(s).__struct_config__.tag) for s in found]
    return OUTBOX.enqueue_rows([s.key for s in found], kinds, [settle.encoder.encode(s) for s in found])


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger answered (kept with the outbox row): its status and body."""

    status: int
    body: msgspec.Raw


class LedgerSettlement(Handler[Settlement]):
    """Sends each settlement to our ledger; the outcome is the ledger's answer, kept with the row.

    A round's decisions go in one request (``decide_remote_many``): per decision, the ledger's work is a log entry
    in a batch it writes anyway, while a request of its own would cost several times that."""

    sends_many = True
    records_many = True

    def __init__(self, ledger: LedgerClient) -> None:
        self._ledger = ledger

    async def send(self, payload: bytes) -> Sent[Settlement] | Retry:
        return (await self.send_many([payload]))[0]

    async def send_many(self, payloads: list[bytes]) -> list[Sent[Settlement] | Retry]:
        commands = [_read(payload) for payload in payloads]
        decides = [(at, c) for at, c in enumerate(commands) if isinstance(c, Decide)]
        accepts = [(at, c) for at, c in enumerate(commands) if isinstance(c, Accept)]
        reverses = [(at, c) for at, c in enumerate(commands) if isinstance(c, Reverse)]
        outcomes: list[Sent[Settlement] | Retry] = [c if isinstance(c, Retry) else Retry("") for c in commands]
        decided, recorded, reversed_ = await asyncio.gather(
            _in_batches(
                [
                    DecideRequest(
                        origin=c.origin,
                        transfer=c.transfer,
                        index=c.index,
                        payee=c.payee,
                        minutes=c.minutes,
                        memo_digest=c.memo_digest,
                    )
                    for _, c in decides
                ],
                self._ledger.decide_remote_many,
            ),
            _in_batches(
                [AcceptanceRequest(origin=c.origin, transfer=c.transfer, index=c.index) for _, c in accepts],
                self._ledger.record_acceptances,
            ),
            asyncio.gather(*(self._reverse(c) for _, c in reverses)),
        )
        answers: list[tuple[int, Settlement, RemoteDecision | RecordedAcceptance | PostedTransfer | LedgerError]] = [
            *((at, c, a) for (at, c), a in zip(decides, decided, strict=True)),
            *((at, c, a) for (at, c), a in zip(accepts, recorded, strict=True)),
            *((at, c, a) for (at, c), a in zip(reverses, reversed_, strict=True)),
        ]
        for at, command, answer in answers:
            outcomes[at] = _settled(command, answer)
        return outcomes

    async def _reverse(self, command: Reverse) -> PostedTransfer | LedgerError:
        """Reverse a payment the neighbour rejected (rare: one request each)."""
        try:
            return await self._ledger.reverse_rejected(command.key, command.origin, command.transfer, command.index)
        except LedgerError as exc:
            return exc

    async def record(self, conn: Connection, sent: Sent[Settlement]) -> None:
        """Nothing beyond the row's outcome: the ledger's log is the record."""

    async def record_many(self, conn: Connection, sent: list[Sent[Settlement]], done: Statement) -> None:
        """Nothing beyond the rows' outcomes, marked done in one statement."""
        await conn.execute(done.sql, *done.args)


async def _in_batches(
    requests: list[_Request], send: Callable[[list[_Request]], Awaitable[list[_Answer | LedgerRefused]]]
) -> list[_Answer | LedgerError]:
    """Send ``requests`` through a batch call, PER_REQUEST at a time: per request, the answer or the error. If one
    malformed request fails a whole batch, each of that batch is sent alone, so only that one is refused."""

    async def chunk(part: list[_Request]) -> list[_Answer | LedgerError]:
        try:
            return list(await send(part))
        except LedgerRefused as exc:
            if exc.status in (400, 413) and len(part) > 1:
                return [answer for alone in await asyncio.gather(*(chunk([r]) for r in part)) for answer in alone]
            return [exc] * len(part)
        except LedgerUnavailable as exc:
            return [exc] * len(part)

    parts = [requests[at : at + PER_REQUEST] for at in range(0, len(requests), PER_REQUEST)]
    return [answer for answers in await asyncio.gather(*map(chunk, parts)) for answer in answers]


def _read(payload: bytes) -> Settlement | Retry:
    try:
        return settle.decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return Retry(f"cannot read the settlement (written by a newer version?): {exc}")


def _settled(
    command: Settlement, answer: RemoteDecision | PostedTransfer | RecordedAcceptance | LedgerError
) -> Sent[Settlement] | Retry:
    """What to record of the ledger's answer to ``command``: the answer, a refusal for good, or nothing yet."""
    if isinstance(answer, LedgerUnavailable):
        return Retry(str(answer))
    if isinstance(answer, LedgerRefused):
        # No clearing account yet (a coordinator may still link the neighbour), or minutes the reversal needs
        # are not there yet (a member's ceiling, a floor a coordinator raised): not now, rather than no. An
        # acceptance record is refused only for a transfer that is not ours to that neighbour: never retried.
        if not answer.final or answer.slug == _LATER.get(type(command)):
            return Retry(str(answer))
        log.warning("the ledger refused %s for good: %s", command.key, answer)
        return Sent(command, _outcome(answer.status, msgspec.json.encode(answer.problem)), failed=True)
    if isinstance(answer, LedgerError):
        return Retry(str(answer))
    return Sent(command, _outcome(200, msgspec.json.encode(answer)))


# The refusals that mean "not now" for each kind of settlement (see LedgerSettlement.send).
_LATER: dict[type, str] = {Decide: "not-found", Reverse: "insufficient-hours"}


def _outcome(status: int, body: bytes) -> bytes:
    return msgspec.json.encode(Outcome(status=status, body=msgspec.Raw(body)))


class Settler(Worker[Settlement]):
    """The federation's outbox worker (``shared.outbox.Worker`` on ``federation.outbox``)."""

    def __init__(self, pool: asyncpg.Pool, ledger: LedgerClient, *, wakeup: Wakeup) -> None:
        super().__init__(pool, OUTBOX, LedgerSettlement(ledger), wakeup=wakeup, lanes=2, linger=0.02)
