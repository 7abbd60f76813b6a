"""The API's request and response Structs: what a client sends is decoded by these types, and only these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from services.exchange import events as ev
from services.exchange import store
from services.exchange.domain.exchanges import MAX_MINUTES

# One line of text with something in it; multi-line text may also hold newlines and tabs.
LINE = r"^(?=.*\S)[^\x00-\x1f\x7f]+$"
TEXT = r"^(?=[\s\S]*\S)[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$"
OPTIONAL_LINE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=LINE)]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=200)]
Skill = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=LINE)]
Skills = Annotated[list[Skill], msgspec.Meta(max_length=20)]
Area = Annotated[str, msgspec.Meta(max_length=100, pattern=OPTIONAL_LINE)]
Bio = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=120, pattern=LINE)]
Description = Annotated[str, msgspec.Meta(min_length=1, max_length=4000, pattern=TEXT)]
Availability = Annotated[str, msgspec.Meta(max_length=200, pattern=OPTIONAL_LINE)]
Memo = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=TEXT)]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=MAX_MINUTES)]
MemberId = Annotated[str, msgspec.Meta(pattern=r"^mem_[0-9a-f]{16}$")]
ListingId = Annotated[str, msgspec.Meta(pattern=r"^lst_[0-9a-f]{16}$")]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=LINE)]


class Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Application(Strict, frozen=True, kw_only=True):
    name: Name
    email: Email
    password: Password
    skills: Skills = []
    area: Area = ""
    bio: Bio = ""


class JoinBody(Application, frozen=True, kw_only=True):
    token: Token


class SignIn(Strict, frozen=True, kw_only=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    # "cookie" for a browser session, "bearer" for an API token.
    kind: Literal["cookie", "bearer"] = "bearer"
    label: Area = ""


class ProfileBody(Strict, frozen=True, kw_only=True):
    name: Name | None = None
    skills: Skills | None = None
    area: Area | None = None
    bio: Bio | None = None


class InvitationBody(Strict, frozen=True, kw_only=True):
    role: ev.Role = "member"


class RoleBody(Strict, frozen=True, kw_only=True):
    role: ev.Role


class ListingBody(Strict, frozen=True, kw_only=True):
    kind: ev.Kind
    category: ev.Category
    title: Title
    description: Description
    area: Area = ""
    availability: Availability = ""
    shared: bool = False
    expires: datetime | None = None


class ListingPatch(Strict, frozen=True, kw_only=True):
    category: ev.Category | None = None
    title: Title | None = None
    description: Description | None = None
    area: Area | None = None
    availability: Availability | None = None
    shared: bool | None = None
    expires: datetime | None = None


class ProposalBody(Strict, frozen=True, kw_only=True):
    # On a listing: the listing's member and you. Otherwise name the providers and receivers (you among them).
    listing: ListingId | None = None
    providers: Annotated[list[MemberId], msgspec.Meta(max_length=50)] = []
    receivers: Annotated[list[MemberId], msgspec.Meta(max_length=50)] = []
    category: ev.Category | None = None
    note: Memo | None = None


class RecordBody(Strict, frozen=True, kw_only=True):
    minutes: Minutes
    memo: Memo | None = None


class DisputeBody(Strict, frozen=True, kw_only=True):
    reason: Memo


class ResolveBody(Strict, frozen=True, kw_only=True):
    minutes: Annotated[int, msgspec.Meta(ge=0, le=MAX_MINUTES)]


class PaymentBody(Strict, frozen=True, kw_only=True):
    kind: ev.PaymentKind = "send"
    # The member paid (send, grant); leave out for a donation to the pot.
    to: MemberId | None = None
    minutes: Minutes
    memo: Memo | None = None


# ---- Responses ----


class Created(msgspec.Struct, kw_only=True):
    id: str
    status: str


class InvitationView(msgspec.Struct, kw_only=True):
    id: str
    role: str
    token: str
    # Relative to this node's address.
    link: str


class SessionView(msgspec.Struct, kw_only=True):
    member: str
    role: str
    status: str
    expires: datetime
    csrf_token: str
    # Only for kind=bearer: the token to send as "Authorization: Bearer <token>". Shown once.
    token: str | None = None


class Balance(msgspec.Struct, kw_only=True):
    account: str
    balance: int
    floor: int
    ceiling: int | None


class StatementEntry(msgspec.Struct, kw_only=True):
    index: int
    at: datetime
    delta: int
    balance: int
    transfer: str
    counterparty: str
    exchange_ref: str | None
    # Your own memo for it, when the exchange still holds it.
    memo: str | None


class Statement(msgspec.Struct, kw_only=True):
    account: str
    entries: list[StatementEntry]
    next_before: int | None


class Actions(msgspec.Struct, kw_only=True):
    """What waits for this member: answers, time to record, time to confirm."""

    to_answer: list[store.ExchangeView]
    to_record: list[store.ExchangeView]
    to_confirm: list[store.ExchangeView]
    waiting_for_others: list[store.ExchangeView]


class ImpactRow(msgspec.Struct, kw_only=True):
    weeks: int
    rows: list[store.ImpactRow]
