"""The exchange's domain events: stored in its private event store, never federated as they are.

Events are frozen, tagged msgspec Structs that evolve by adding fields with defaults. Personal data (names,
contact, profile, listing texts, memos) never appears in clear: it travels as a ``Sealed`` blob encrypted under
the data key of its subject (see ``vault.py``), so erasing a member makes it unreadable for good while the
events, and the ledger, stay as they were.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Kind = Literal["offer", "request"]
Role = Literal["member", "coordinator", "auditor"]
Category = Literal[
    "food",
    "transport",
    "childcare",
    "care_and_health",
    "home_repair",
    "tutoring",
    "tech_help",
    "admin_and_paperwork",
    "language",
    "company_and_listening",
    "other",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]
PaymentKind = Literal["send", "donation", "grant"]
# The community pot, as a party to a payment.
POT = "pot"


class Sealed(msgspec.Struct, frozen=True, kw_only=True):
    """Personal data encrypted under ``subject``'s data key (AES-GCM, nonce || ciphertext)."""

    subject: str
    box: bytes


# ---- What sealed blobs hold ----


class MemberDetails(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    email: str
    skills: list[str] = []
    area: str = ""
    bio: str = ""
    password_hash: str = ""


class ListingText(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    description: str
    area: str = ""
    availability: str = ""


class Memo(msgspec.Struct, frozen=True, kw_only=True):
    """What a transfer was for; the ledger holds only SHA-256(salt || memo)."""

    text: str
    salt: bytes


class Note(msgspec.Struct, frozen=True, kw_only=True):
    text: str


# ---- Events ----


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    at: datetime


class MemberApplied(Event, frozen=True, kw_only=True, tag="exchange.member.applied.v1"):
    member: str
    role: Role = "member"
    details: Sealed
    # Joined through a coordinator's invitation: approved at once.
    invitation: str | None = None


class MemberApproved(Event, frozen=True, kw_only=True, tag="exchange.member.approved.v1"):
    member: str
    by: str | None = None


class MemberRejected(Event, frozen=True, kw_only=True, tag="exchange.member.rejected.v1"):
    member: str
    by: str | None = None


class LedgerAccountOpened(Event, frozen=True, kw_only=True, tag="exchange.member.account.v1"):
    member: str
    account: str


class ProfileUpdated(Event, frozen=True, kw_only=True, tag="exchange.member.profile.v1"):
    member: str
    details: Sealed


class RoleChanged(Event, frozen=True, kw_only=True, tag="exchange.member.role.v1"):
    member: str
    role: Role
    by: str | None = None


class MemberErased(Event, frozen=True, kw_only=True, tag="exchange.member.erased.v1"):
    member: str
    by: str | None = None


class InvitationCreated(Event, frozen=True, kw_only=True, tag="exchange.invitation.created.v1"):
    invitation: str
    role: Role
    token_sha256: str
    expires: datetime
    by: str | None = None


class InvitationUsed(Event, frozen=True, kw_only=True, tag="exchange.invitation.used.v1"):
    invitation: str
    member: str


class ListingPublished(Event, frozen=True, kw_only=True, tag="exchange.listing.published.v1"):
    listing: str
    member: str
    kind: Kind
    category: Category
    shared: bool = False
    expires: datetime
    text: Sealed


class ListingEdited(Event, frozen=True, kw_only=True, tag="exchange.listing.edited.v1"):
    listing: str
    category: Category
    shared: bool
    expires: datetime
    text: Sealed


class ListingPaused(Event, frozen=True, kw_only=True, tag="exchange.listing.paused.v1"):
    listing: str


class ListingResumed(Event, frozen=True, kw_only=True, tag="exchange.listing.resumed.v1"):
    listing: str


class ListingWithdrawn(Event, frozen=True, kw_only=True, tag="exchange.listing.withdrawn.v1"):
    listing: str
    # Withdrawn by a coordinator (moderation) rather than by its member.
    by: str | None = None


class ExchangeProposed(Event, frozen=True, kw_only=True, tag="exchange.exchange.proposed.v1"):
    exchange: str
    proposer: str
    providers: list[str]
    receivers: list[str]
    listing: str | None = None
    category: Category = "other"
    note: Sealed | None = None


class ExchangeAccepted(Event, frozen=True, kw_only=True, tag="exchange.exchange.accepted.v1"):
    exchange: str
    by: str


class ExchangeDeclined(Event, frozen=True, kw_only=True, tag="exchange.exchange.declined.v1"):
    exchange: str
    by: str


class ExchangeCancelled(Event, frozen=True, kw_only=True, tag="exchange.exchange.cancelled.v1"):
    exchange: str
    by: str


class TimeRecorded(Event, frozen=True, kw_only=True, tag="exchange.exchange.recorded.v1"):
    """A provider's time: split evenly between several receivers, or one line of several providers."""

    exchange: str
    by: str
    minutes: int
    memo: Sealed
    memo_digest: str


class ExchangeConfirmed(Event, frozen=True, kw_only=True, tag="exchange.exchange.confirmed.v1"):
    exchange: str
    by: str


class ExchangeDisputed(Event, frozen=True, kw_only=True, tag="exchange.exchange.disputed.v1"):
    exchange: str
    by: str
    reason: Sealed


class DisputeResolved(Event, frozen=True, kw_only=True, tag="exchange.exchange.resolved.v1"):
    """A coordinator's ruling on the disputed lines: the minutes to post (0: nothing is posted)."""

    exchange: str
    by: str
    minutes: int


class LineSettled(Event, frozen=True, kw_only=True, tag="exchange.exchange.settled.v1"):
    exchange: str
    line: int
    transfer: str
    index: int


class LineRefused(Event, frozen=True, kw_only=True, tag="exchange.exchange.refused.v1"):
    exchange: str
    line: int
    reason: str


class PaymentMade(Event, frozen=True, kw_only=True, tag="exchange.payment.made.v1"):
    """Hours sent directly: member to member, a donation to the pot, or a coordinator's grant from it."""

    payment: str
    kind: PaymentKind
    payer: str
    payee: str
    minutes: int
    by: str
    memo: Sealed
    memo_digest: str


class PaymentSettled(Event, frozen=True, kw_only=True, tag="exchange.payment.settled.v1"):
    payment: str
    transfer: str
    index: int


class PaymentRefused(Event, frozen=True, kw_only=True, tag="exchange.payment.refused.v1"):
    payment: str
    reason: str


class PotOpened(Event, frozen=True, kw_only=True, tag="exchange.pot.opened.v1"):
    account: str


AnyEvent = (
    MemberApplied
    | MemberApproved
    | MemberRejected
    | LedgerAccountOpened
    | ProfileUpdated
    | RoleChanged
    | MemberErased
    | InvitationCreated
    | InvitationUsed
    | ListingPublished
    | ListingEdited
    | ListingPaused
    | ListingResumed
    | ListingWithdrawn
    | ExchangeProposed
    | ExchangeAccepted
    | ExchangeDeclined
    | ExchangeCancelled
    | TimeRecorded
    | ExchangeConfirmed
    | ExchangeDisputed
    | DisputeResolved
    | LineSettled
    | LineRefused
    | PaymentMade
    | PaymentSettled
    | PaymentRefused
    | PotOpened
)

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(AnyEvent)


def tag_of(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]
