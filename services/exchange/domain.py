"""The exchange's pure domain: aggregate state folded from events, and decisions that return new events.

Nothing here talks to a database, the ledger or the web. Personal data arrives already sealed; decisions look
only at who may do what, and in which state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.exchange import events as ev
from shared.errors import Conflict, Forbidden, Invalid, NotFound

MemberStatus = Literal["pending", "approved", "rejected", "erased"]
LineState = Literal["open", "declined", "recorded", "confirmed", "disputed", "settled", "refused", "void"]
# A single exchange line, like a single ledger transfer, is at most 1,000 hours.
MAX_MINUTES = 60_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a member id and their role (coordinators may act for the network)."""

    member: str
    role: str

    @property
    def coordinator(self) -> bool:
        return self.role == "coordinator"


# ---- Members ----


@dataclass(slots=True)
class Member:
    id: str
    status: MemberStatus = "pending"
    role: str = "member"
    account: str | None = None


def fold_member(member_id: str, history: list[ev.AnyEvent]) -> Member | None:
    if not history:
        return None
    member = Member(member_id)
    for event in history:
        if isinstance(event, ev.MemberApplied):
            member.role = event.role
            member.status = "approved" if event.invitation else "pending"
        elif isinstance(event, ev.MemberApproved):
            member.status = "approved"
        elif isinstance(event, ev.MemberRejected):
            member.status = "rejected"
        elif isinstance(event, ev.LedgerAccountOpened):
            member.account = event.account
        elif isinstance(event, ev.RoleChanged):
            member.role = event.role
        elif isinstance(event, ev.MemberErased):
            member.status = "erased"
    return member


def approve(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _need_coordinator(actor)
    if member.status == "approved":
        return []  # approving twice changes nothing
    if member.status != "pending":
        raise Conflict(f"member {member.id} is {member.status} and cannot be approved", status=member.status)
    return [ev.MemberApproved(at=at, member=member.id, by=actor.member)]


def reject(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _need_coordinator(actor)
    if member.status != "pending":
        raise Conflict(f"member {member.id} is {member.status}; only an application can be rejected")
    return [ev.MemberRejected(at=at, member=member.id, by=actor.member)]


def change_role(member: Member, actor: Actor, role: ev.Role, at: datetime) -> list[ev.AnyEvent]:
    _need_coordinator(actor)
    _need_active(member)
    if member.role == role:
        return []
    return [ev.RoleChanged(at=at, member=member.id, role=role, by=actor.member)]


def update_profile(member: Member, actor: Actor, details: ev.Sealed, at: datetime) -> list[ev.AnyEvent]:
    if actor.member != member.id:
        raise Forbidden("only the member may edit their profile")
    if member.status in ("erased", "rejected"):
        raise Conflict(f"member {member.id} is {member.status}")
    return [ev.ProfileUpdated(at=at, member=member.id, details=details)]


def erase(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    if actor.member != member.id and not actor.coordinator:
        raise Forbidden("only the member or a coordinator may erase a member's personal data")
    if member.status == "erased":
        return []
    return [ev.MemberErased(at=at, member=member.id, by=actor.member)]


def need_approved(member: Member | None, what: str = "do this") -> Member:
    """Only approved members with an open ledger account may list, propose or pay."""
    if member is None:
        raise NotFound("no such member")
    if member.status != "approved":
        raise Forbidden(f"member {member.id} is {member.status}: only approved members can {what}")
    return member


def _need_active(member: Member) -> None:
    if member.status in ("erased", "rejected"):
        raise Conflict(f"member {member.id} is {member.status}")


def _need_coordinator(actor: Actor) -> None:
    if not actor.coordinator:
        raise Forbidden("this needs a coordinator")


# ---- Listings ----


@dataclass(slots=True)
class Listing:
    id: str
    member: str
    kind: str
    category: ev.Category
    status: Literal["active", "paused", "withdrawn"] = "active"
    expires: datetime | None = None


def fold_listing(listing_id: str, history: list[ev.AnyEvent]) -> Listing | None:
    listing: Listing | None = None
    for event in history:
        if isinstance(event, ev.ListingPublished):
            listing = Listing(listing_id, event.member, event.kind, event.category, expires=event.expires)
        elif listing is None:
            continue
        elif isinstance(event, ev.ListingEdited):
            listing.category, listing.expires = event.category, event.expires
        elif isinstance(event, ev.ListingPaused):
            listing.status = "paused"
        elif isinstance(event, ev.ListingResumed):
            listing.status = "active"
        elif isinstance(event, ev.ListingWithdrawn):
            listing.status = "withdrawn"
    return listing


def _own_listing(listing: Listing, actor: Actor) -> None:
    if listing.member != actor.member and not actor.coordinator:
        raise Forbidden("only the listing's member (or a coordinator) may change it")
    if listing.status == "withdrawn":
        raise Conflict(f"listing {listing.id} was withdrawn")


def edit_listing(
    listing: Listing,
    actor: Actor,
    *,
    category: ev.Category,
    shared: bool,
    expires: datetime,
    text: ev.Sealed,
    at: datetime,
) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    if listing.member != actor.member:
        raise Forbidden("only the listing's member may edit it; a coordinator may withdraw it")
    if expires <= at:
        raise Invalid("the expiry must be in the future")
    return [ev.ListingEdited(at=at, listing=listing.id, category=category, shared=shared, expires=expires, text=text)]


def pause_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    return [] if listing.status == "paused" else [ev.ListingPaused(at=at, listing=listing.id)]


def resume_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    return [] if listing.status == "active" else [ev.ListingResumed(at=at, listing=listing.id)]


def withdraw_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    by = actor.member if listing.member != actor.member else None
    return [ev.ListingWithdrawn(at=at, listing=listing.id, by=by)]


# ---- Exchanges ----


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
    _need_coordinator(actor)
    if not 0 <= minutes <= MAX_MINUTES:
        raise Invalid(f"minutes must be between 0 and {MAX_MINUTES}")
    if not any(line.state in ("disputed", "refused") for line in ex.live_lines):
        raise Conflict(f"exchange {ex.id} is {ex.status}: nothing to resolve", status=ex.status)
    return [ev.DisputeResolved(at=at, exchange=ex.id, by=actor.member, minutes=minutes)]


# ---- Payments ----


@dataclass(slots=True)
class Payment:
    id: str
    kind: str
    payer: str
    payee: str
    minutes: int
    memo_digest: str
    status: Literal["pending", "settled", "refused"] = "pending"


def fold_payment(payment_id: str, history: list[ev.AnyEvent]) -> Payment | None:
    payment: Payment | None = None
    for event in history:
        if isinstance(event, ev.PaymentMade):
            payment = Payment(payment_id, event.kind, event.payer, event.payee, event.minutes, event.memo_digest)
        elif payment is None:
            continue
        elif isinstance(event, ev.PaymentSettled):
            payment.status = "settled"
        elif isinstance(event, ev.PaymentRefused):
            payment.status = "refused"
    return payment


def pay(
    payment_id: str,
    actor: Actor,
    *,
    kind: ev.PaymentKind,
    payee: str,
    minutes: int,
    memo: ev.Sealed,
    digest: str,
    at: datetime,
) -> list[ev.AnyEvent]:
    if not 1 <= minutes <= MAX_MINUTES:
        raise Invalid(f"minutes must be between 1 and {MAX_MINUTES}")
    if kind == "grant":
        _need_coordinator(actor)
        payer = ev.POT
    else:
        payer = actor.member
    if kind == "donation":
        payee = ev.POT
    if payer == payee:
        raise Invalid("you cannot send hours to yourself")
    return [
        ev.PaymentMade(
            at=at,
            payment=payment_id,
            kind=kind,
            payer=payer,
            payee=payee,
            minutes=minutes,
            by=actor.member,
            memo=memo,
            memo_digest=digest,
        )
    ]
