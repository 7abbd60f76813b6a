"""Exchanges: proposed, answered, time recorded, confirmed or disputed, resolved; each provider-receiver line
becomes one ledger transfer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.exchange import events as ev
from services.exchange.domain.members import Actor, need_coordinator
from shared.errors import Conflict, Forbidden, Invalid

LineState = Literal["open", "declined", "recorded", "confirmed", "disputed", "settled", "refused", "void"]
# A single exchange line, like a single ledger transfer, is at most 1,000 hours.
MAX_MINUTES = 60_000


@dataclass(slots=True)
class Line:
    """One provider-receiver pair of an exchange: what becomes one ledger transfer."""

    n: int
    provider: str
    receiver: str
    state: LineState = "open"
    minutes: int = 0
    attempt: int = 0
    memo_digest: str | None = None
    transfer: str | None = None
    index: int | None = None
    settled_at: datetime | None = None


@dataclass(slots=True)
class Exchange:
    id: str
    proposer: str
    providers: list[str]
    receivers: list[str]
    listing: str | None
    category: str
    lines: list[Line] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    cancelled: bool = False
    created: datetime | None = None
    updated: datetime | None = None

    @property
    def parties(self) -> list[str]:
        return [*self.providers, *self.receivers]

    @property
    def live_lines(self) -> list[Line]:
        return [line for line in self.lines if line.state != "declined"]

    @property
    def status(self) -> str:
        """proposed, accepted, declined, cancelled, recorded, disputed, confirmed, refused or completed."""
        if self.cancelled:
            return "cancelled"
        live = self.live_lines
        if not live:
            return "declined"
        states = {line.state for line in live}
        if states == {"open"}:
            waiting = [p for p in self.parties if p not in self.accepted and p not in self.declined]
            return "proposed" if waiting else "accepted"
        if "disputed" in states:
            return "disputed"
        if "refused" in states:
            return "refused"
        if states <= {"settled", "void"}:
            return "completed"
        if states & {"open", "recorded"}:
            return "recorded" if "open" not in states else "accepted"
        return "confirmed"

    def key(self, line: Line) -> str:
        """The ledger idempotency key of a line: the exchange id for a plain one-to-one exchange."""
        base = self.id if len(self.lines) == 1 else f"{self.id}:{line.n}"
        return base if line.attempt == 0 else f"{base}:retry{line.attempt}"


def fold_exchange(exchange_id: str, history: list[ev.AnyEvent]) -> Exchange | None:
    ex: Exchange | None = None
    for event in history:
        if ex is not None:
            ex.updated = event.at
        if isinstance(event, ev.ExchangeProposed):
            ex = Exchange(exchange_id, event.proposer, event.providers, event.receivers, event.listing, event.category)
            ex.lines = [
                Line(n, p, r) for n, (p, r) in enumerate((p, r) for p in event.providers for r in event.receivers)
            ]
            ex.accepted.add(event.proposer)
            ex.created = ex.updated = event.at
        elif ex is None:
            continue
        elif isinstance(event, ev.ExchangeAccepted):
            ex.accepted.add(event.by)
        elif isinstance(event, ev.ExchangeDeclined):
            ex.declined.add(event.by)
            for line in ex.lines:
                if event.by in (line.provider, line.receiver):
                    line.state = "declined"
        elif isinstance(event, ev.ExchangeCancelled):
            ex.cancelled = True
        elif isinstance(event, ev.TimeRecorded):
            mine = [line for line in ex.live_lines if line.provider == event.by]
            for line, minutes in zip(mine, split(event.minutes, len(mine)), strict=True):
                line.state, line.minutes, line.memo_digest = "recorded", minutes, event.memo_digest
        elif isinstance(event, ev.ExchangeConfirmed):
            for line in ex.live_lines:
                if line.receiver == event.by and line.state == "recorded":
                    line.state = "confirmed"
        elif isinstance(event, ev.ExchangeDisputed):
            for line in ex.live_lines:
                if line.receiver == event.by and line.state == "recorded":
                    line.state = "disputed"
        elif isinstance(event, ev.DisputeResolved):
            for line in ex.live_lines:
                if line.state in ("disputed", "refused"):
                    if line.state == "refused":
                        line.attempt += 1
                    line.minutes = event.minutes
                    line.state = "confirmed" if event.minutes > 0 else "void"
        elif isinstance(event, ev.LineSettled):
            line = ex.lines[event.line]
            line.state, line.transfer, line.index, line.settled_at = "settled", event.transfer, event.index, event.at
        elif isinstance(event, ev.LineRefused):
            ex.lines[event.line].state = "refused"
    return ex


def split(minutes: int, parts: int) -> list[int]:
    """Share a provider's minutes between ``parts`` receivers as evenly as whole minutes allow."""
    base, extra = divmod(minutes, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def propose(
    exchange_id: str,
    actor: Actor,
    *,
    providers: list[str],
    receivers: list[str],
    listing: str | None,
    category: ev.Category,
    note: ev.Sealed | None,
    at: datetime,
) -> list[ev.AnyEvent]:
    parties = [*providers, *receivers]
    if not providers or not receivers:
        raise Invalid("an exchange needs at least one provider and one receiver")
    if len(providers) > 1 and len(receivers) > 1:
        raise Invalid("a group exchange has one provider and several receivers, or several providers and one receiver")
    if len(set(parties)) != len(parties):
        raise Invalid("a member can take part in an exchange only once (and cannot exchange with themselves)")
    if actor.member not in parties:
        raise Forbidden("the proposer must take part in the exchange")
    return [
        ev.ExchangeProposed(
            at=at,
            exchange=exchange_id,
            proposer=actor.member,
            providers=providers,
            receivers=receivers,
            listing=listing,
            category=category,
            note=note,
        )
    ]


def _party(ex: Exchange, actor: Actor) -> None:
    if actor.member not in ex.parties:
        raise Forbidden("only the exchange's members may act on it")


def accept(ex: Exchange, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _party(ex, actor)
    if ex.status != "proposed":
        raise Conflict(f"exchange {ex.id} is {ex.status}, not awaiting acceptance", status=ex.status)
    if actor.member in ex.accepted:
        raise Conflict("you have already accepted this exchange")
    if actor.member in ex.declined:
        raise Conflict("you have declined this exchange")
    return [ev.ExchangeAccepted(at=at, exchange=ex.id, by=actor.member)]


def decline(ex: Exchange, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _party(ex, actor)
    if ex.status != "proposed" or actor.member in ex.accepted or actor.member in ex.declined:
        raise Conflict(f"exchange {ex.id} is {ex.status}; only an invited member who has not answered can decline")
    return [ev.ExchangeDeclined(at=at, exchange=ex.id, by=actor.member)]


def cancel(ex: Exchange, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _party(ex, actor)
    if ex.status not in ("proposed", "accepted") or any(line.state != "open" for line in ex.live_lines):
        raise Conflict(f"exchange {ex.id} is {ex.status}: it can be cancelled only before time is recorded")
    return [ev.ExchangeCancelled(at=at, exchange=ex.id, by=actor.member)]


def record(ex: Exchange, actor: Actor, minutes: int, memo: ev.Sealed, digest: str, at: datetime) -> list[ev.AnyEvent]:
    _party(ex, actor)
    if actor.member not in ex.providers:
        raise Forbidden("only a provider records the time they spent")
    mine = [line for line in ex.live_lines if line.provider == actor.member]
    if ex.status in ("proposed", "declined", "cancelled"):
        raise Conflict(f"exchange {ex.id} is {ex.status}: time can be recorded once it is accepted")
    if any(line.state not in ("open", "recorded") for line in mine):
        raise Conflict("this time has already been confirmed or disputed")
    if not 1 <= minutes <= MAX_MINUTES:
        raise Invalid(f"minutes must be between 1 and {MAX_MINUTES}")
    if minutes < len(mine):
        raise Invalid(f"{minutes} minutes cannot be shared between {len(mine)} receivers")
    return [ev.TimeRecorded(at=at, exchange=ex.id, by=actor.member, minutes=minutes, memo=memo, memo_digest=digest)]


def confirm(ex: Exchange, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    """The receiver confirms the time recorded for them; their lines are then settled in the ledger."""
    _party(ex, actor)
    if actor.member not in ex.receivers:
        raise Forbidden("only a receiver confirms the time")
    if not any(line.receiver == actor.member and line.state == "recorded" for line in ex.live_lines):
        raise Conflict(f"exchange {ex.id} has no recorded time awaiting your confirmation", status=ex.status)
    return [ev.ExchangeConfirmed(at=at, exchange=ex.id, by=actor.member)]


def dispute(ex: Exchange, actor: Actor, reason: ev.Sealed, at: datetime) -> list[ev.AnyEvent]:
    _party(ex, actor)
    if actor.member not in ex.receivers:
        raise Forbidden("only a receiver disputes the time")
    if not any(line.receiver == actor.member and line.state == "recorded" for line in ex.live_lines):
        raise Conflict(f"exchange {ex.id} has no recorded time awaiting your confirmation", status=ex.status)
    return [ev.ExchangeDisputed(at=at, exchange=ex.id, by=actor.member, reason=reason)]


def resolve(ex: Exchange, actor: Actor, minutes: int, at: datetime) -> list[ev.AnyEvent]:
    """A coordinator settles disputed (or ledger-refused) lines at ``minutes`` each; 0 posts nothing."""
    need_coordinator(actor)
    if not 0 <= minutes <= MAX_MINUTES:
        raise Invalid(f"minutes must be between 0 and {MAX_MINUTES}")
    if not any(line.state in ("disputed", "refused") for line in ex.live_lines):
        raise Conflict(f"exchange {ex.id} is {ex.status}: nothing to resolve", status=ex.status)
    return [ev.DisputeResolved(at=at, exchange=ex.id, by=actor.member, minutes=minutes)]
