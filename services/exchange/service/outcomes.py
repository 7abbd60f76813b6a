"""The ledger's answers: each recorded as the event it means, in the outbox's transaction."""

from __future__ import annotations

from services.exchange import events as ev
from services.exchange import outbox
from services.exchange.domain.exchanges import fold_exchange
from services.exchange.domain.members import fold_member
from services.exchange.service.core import POT_KEY, Core, exists, log, now
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from services.exchange.writes import Write
from services.ledger.client import OpenedAccount, PostedTransfer
from shared.db import Connection


class OutcomeCommands(Core):
    async def ensure_pot(self) -> None:
        """Ask the ledger for the community pot's account (idempotent: the key never changes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, outbox.OpenLedgerAccount(key=POT_KEY, kind="community"))
        self.wake()

    async def on_outcome(self, conn: Connection, command: outbox.OutboxCommand, outcome: outbox.AnyOutcome) -> None:
        """Record the ledger's answer to ``command`` as the event it means (in the outbox's transaction)."""
        u = Unit(conn, Vault(conn))
        await self._record_outcome(u, command, outcome)
        await u.flush()

    async def on_outcomes(
        self, conn: Connection, answers: list[tuple[outbox.OutboxCommand, outbox.AnyOutcome]], done: Write
    ) -> None:
        """``on_outcome`` for many answers at once: their streams read in one round trip, and their events, read
        models and the outbox's ``done`` marks written in one statement."""
        u = Unit(conn, Vault(conn))
        await u.preload(sorted({_stream_of(command) for command, _ in answers}))
        for command, outcome in answers:
            await self._record_outcome(u, command, outcome)
        await u.flush([done])

    async def _record_outcome(self, u: Unit, command: outbox.OutboxCommand, outcome: outbox.AnyOutcome) -> None:
        at = now()
        if isinstance(command, outbox.OpenLedgerAccount):
            if not isinstance(outcome, outbox.Delivered):
                log.error("the ledger refused to open %s: %s", command.key, outcome)
                return
            result = outcome.result
            assert isinstance(result, OpenedAccount)
            account = result.account
            if command.member is None:
                history = await u.load("pot")
                if not history:
                    await u.save("pot", history, [ev.PotOpened(at=at, account=account)])
                return
            member = command.member
            history = await u.load(member)
            if fold_member(member, history) is not None and not any(
                isinstance(e, ev.LedgerAccountOpened) for e in history
            ):
                await u.save(member, history, [ev.LedgerAccountOpened(at=at, member=member, account=account)])
            return
        assert isinstance(command, outbox.PostTransfer)
        stream = command.stream or command.key
        history = await u.load(stream)
        posted = outcome.result if isinstance(outcome, outbox.Delivered) else None
        assert posted is None or isinstance(posted, PostedTransfer)
        new: list[ev.AnyEvent]
        if stream.startswith("pay_"):
            if posted is not None:
                new = [ev.PaymentSettled(at=at, payment=stream, transfer=posted.id, index=posted.index)]
            else:
                new = [ev.PaymentRefused(at=at, payment=stream, reason=_reason(outcome))]
        else:
            ex = exists(fold_exchange(stream, history), "exchange", stream)
            line = next(line for line in ex.lines if ex.key(line) == command.key)
            if line.state != "confirmed":
                return  # an answer to a settled or superseded attempt
            if posted is not None:
                new = [ev.LineSettled(at=at, exchange=stream, line=line.n, transfer=posted.id, index=posted.index)]
            else:
                new = [ev.LineRefused(at=at, exchange=stream, line=line.n, reason=_reason(outcome))]
        await u.save(stream, history, new)


def _stream_of(command: outbox.OutboxCommand) -> str:
    """The stream the ledger's answer to ``command`` is recorded in."""
    if isinstance(command, outbox.OpenLedgerAccount):
        return command.member or "pot"
    return command.stream or command.key


def _reason(outcome: outbox.AnyOutcome) -> str:
    problem = outcome.problem if isinstance(outcome, outbox.Refused) else {}
    return str(problem.get("detail") or problem.get("title") or "refused by the ledger")
