"""What a member or coordinator can ask the exchange to do: one frozen command per action.

The API and the web pages build these from what they parsed; ``service.Commands`` decides each one on the
current state (with ``match``). Pure msgspec: no web, no database.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from services.exchange import events as ev


class Command(msgspec.Struct, frozen=True, kw_only=True):
    pass


# ---- Members and access ----


class ApplyToJoin(Command, frozen=True, kw_only=True):
    details: ev.MemberDetails


class Invite(Command, frozen=True, kw_only=True):
    role: ev.Role = "member"


class JoinByInvitation(Command, frozen=True, kw_only=True):
    token: str
    details: ev.MemberDetails


class ApproveMember(Command, frozen=True, kw_only=True):
    member: str


class RejectMember(Command, frozen=True, kw_only=True):
    member: str


class ChangeRole(Command, frozen=True, kw_only=True):
    member: str
    role: ev.Role


class UpdateProfile(Command, frozen=True, kw_only=True):
    """The profile fields to change (None: keep as it is)."""

    name: str | None = None
    skills: list[str] | None = None
    area: str | None = None
    bio: str | None = None


class EraseMember(Command, frozen=True, kw_only=True):
    member: str


# ---- Listings ----


class PublishListing(Command, frozen=True, kw_only=True):
    kind: ev.Kind
    category: ev.Category
    text: ev.ListingText
    shared: bool = False
    # None: the network's default run.
    expires: datetime | None = None


class EditListing(Command, frozen=True, kw_only=True):
    """The listing fields to change (None: keep as it is; an empty area or availability clears it)."""

    listing: str
    category: ev.Category | None = None
    title: str | None = None
    description: str | None = None
    area: str | None = None
    availability: str | None = None
    shared: bool | None = None
    expires: datetime | None = None


class PauseListing(Command, frozen=True, kw_only=True):
    listing: str


class ResumeListing(Command, frozen=True, kw_only=True):
    listing: str


class WithdrawListing(Command, frozen=True, kw_only=True):
    listing: str


ListingStatusCommand = PauseListing | ResumeListing | WithdrawListing
LISTING_STATUS: dict[str, type[ListingStatusCommand]] = {
    "pause": PauseListing,
    "resume": ResumeListing,
    "withdraw": WithdrawListing,
}


# ---- Exchanges ----


class ProposeExchange(Command, frozen=True, kw_only=True):
    """On a listing (the proposer takes the other side), or a direct or group exchange naming its parties."""

    listing: str | None = None
    providers: list[str] = []
    receivers: list[str] = []
    note: str | None = None
    category: ev.Category | None = None


class AcceptExchange(Command, frozen=True, kw_only=True):
    exchange: str


class DeclineExchange(Command, frozen=True, kw_only=True):
    exchange: str


class CancelExchange(Command, frozen=True, kw_only=True):
    exchange: str


class RecordTime(Command, frozen=True, kw_only=True):
    exchange: str
    minutes: int
    # None: a memo naming the exchange.
    memo: str | None = None


class ConfirmExchange(Command, frozen=True, kw_only=True):
    exchange: str


class DisputeExchange(Command, frozen=True, kw_only=True):
    exchange: str
    reason: str


class ResolveDispute(Command, frozen=True, kw_only=True):
    exchange: str
    minutes: int


ExchangeCommand = (
    AcceptExchange | DeclineExchange | CancelExchange | RecordTime | ConfirmExchange | DisputeExchange | ResolveDispute
)


# ---- Payments ----


class MakePayment(Command, frozen=True, kw_only=True):
    """Send hours to a member, donate them to the community pot (payee ``events.POT``), or grant from it."""

    kind: ev.PaymentKind
    payee: str
    minutes: int
    memo: str | None = None
