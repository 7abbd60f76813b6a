"""Carrying out settlements: the federation's outbox, sent to our ledger with the federation's credential.

A decision, reversal or acceptance record is enqueued in the transaction that stores the verified entries asking for
it, so a crash loses none; the ledger deduplicates by (origin, transfer), by our transfer and by key, so sending one
twice does it once.
"""

from __future__ import annotations

import logging

import asyncpg
import msgspec

from services.federation import settle
from services.federation.settle import Accept, Decide, Reverse, Settlement
from services.ledger.client import LedgerClient, LedgerRefused, LedgerUnavailable
from shared.db import Connection
from shared.outbox import Handler, Outbox, Retry, Sent, Statement, Wakeup, Worker

log = logging.getLogger(__name__)

OUTBOX = Outbox("federation.outbox", owner="federation")


def enqueue(found: list[Settlement]) -> Statement:
    """The statement that queues ``found``, to run in the transaction that stores the entries asking for it."""
    kinds = [str(type(s).__struct_config__.tag) for s in found]
    return OUTBOX.enqueue_rows([s.key for s in found], kinds, [settle.encoder.encode(s) for s in found])


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger answered (kept with the outbox row): its status and body."""

    status: int
    body: msgspec.Raw


class LedgerSettlement(Handler[Settlement]):
    """Sends each settlement to our ledger; the outcome is the ledger's answer, kept with the row."""

    def __init__(self, ledger: LedgerClient) -> None:
        self._ledger = ledger

    async def send(self, payload: bytes) -> Sent[Settlement] | Retry:
        try:
            command = settle.decoder.decode(payload)
        except msgspec.DecodeError as exc:
            return Retry(f"cannot read the settlement (written by a newer version?): {exc}")
        try:
            if isinstance(command, Decide):
                decision = await self._ledger.decide_remote(
                    command.origin,
                    command.transfer,
                    command.index,
                    command.payee,
                    command.minutes,
                    memo_digest=command.memo_digest,
                )
                answer = msgspec.json.encode(decision)
            elif isinstance(command, Accept):
                recorded = await self._ledger.record_acceptance(command.origin, command.transfer, command.index)
                answer = msgspec.json.encode(recorded)
            else:
                reversal = await self._ledger.reverse_rejected(
                    command.key, command.origin, command.transfer, command.index
                )
                answer = msgspec.json.encode(reversal)
        except LedgerRefused as exc:
            # No clearing account yet (a coordinator may still link the neighbour), or minutes the reversal needs
            # are not there yet (a member's ceiling, a floor a coordinator raised): not now, rather than no. An
            # acceptance record is refused only for a transfer that is not ours to that neighbour: never retried.
            if not exc.final or exc.slug == _LATER.get(type(command)):
                return Retry(str(exc))
            log.warning("the ledger refused %s for good: %s", command.key, exc)
            return Sent(command, _outcome(exc.status, msgspec.json.encode(exc.problem)), failed=True)
        except LedgerUnavailable as exc:
            return Retry(str(exc))
        return Sent(command, _outcome(200, answer))

    async def record(self, conn: Connection, sent: Sent[Settlement]) -> None:
        """Nothing beyond the row's outcome: the ledger's log is the record."""


# The refusals that mean "not now" for each kind of settlement (see LedgerSettlement.send).
_LATER: dict[type, str] = {Decide: "not-found", Reverse: "insufficient-hours"}


def _outcome(status: int, body: bytes) -> bytes:
    return msgspec.json.encode(Outcome(status=status, body=msgspec.Raw(body)))


class Settler(Worker[Settlement]):
    """The federation's outbox worker (``shared.outbox.Worker`` on ``federation.outbox``)."""

    def __init__(self, pool: asyncpg.Pool, ledger: LedgerClient, *, wakeup: Wakeup) -> None:
        super().__init__(pool, OUTBOX, LedgerSettlement(ledger), wakeup=wakeup, lanes=2, linger=0.02)
