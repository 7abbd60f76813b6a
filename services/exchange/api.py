"""The exchange's JSON API (under ``/api``): request Structs, thin controllers, response Structs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, delete, get, patch, post, put
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from services.exchange import auth, store
from services.exchange import commands as cmd
from services.exchange import events as ev
from services.exchange.auth import Principal
from services.exchange.domain import MAX_MINUTES, Actor
from services.exchange.ledger_client import LedgerClient, LedgerError, LedgerRefused
from services.exchange.service import Commands
from shared.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unauthorized, Unavailable
from shared.web import AnyRequest

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


Me = NamedDependency[Principal | None]


async def current(request: AnyRequest, state: State) -> Principal | None:
    gate: auth.Gate = state.gate
    async with state.pool.acquire() as conn:
        return await gate.resolve(
            conn,
            authorization=request.headers.get("authorization"),
            cookie=request.cookies.get(auth.SESSION_COOKIE),
            method=request.method,
            csrf=request.headers.get(auth.CSRF_HEADER),
        )


def caller(request: AnyRequest, state: State) -> Actor | auth.Credentials:
    """Who calls, for a command that looks their session up itself, with its first read (one round trip fewer
    than resolving ``me`` first). Anonymous callers and malformed credentials are refused here already."""
    gate: auth.Gate = state.gate
    found = gate.credentials(
        authorization=request.headers.get("authorization"),
        cookie=request.cookies.get(auth.SESSION_COOKIE),
        method=request.method,
        csrf=request.headers.get(auth.CSRF_HEADER),
    )
    if isinstance(found, auth.Credentials):
        return found
    return signed_in(found)


def signed_in(me: Principal | None) -> Actor:
    if me is None:
        raise Unauthorized("sign in first")
    return me.actor


def coordinator(me: Principal | None) -> Actor:
    actor = signed_in(me)
    if not actor.coordinator:
        raise Forbidden("this needs a coordinator")
    return actor


def member_details(body: Application, password_hash: str) -> ev.MemberDetails:
    return ev.MemberDetails(
        name=body.name.strip(),
        email=body.email.strip(),
        skills=[s.strip() for s in body.skills],
        area=body.area.strip(),
        bio=body.bio,
        password_hash=password_hash,
    )


class MemberController(Controller):
    path = "/api"
    tags = ("members",)

    @post("/applications", operation_id="applyToJoin", status_code=HTTP_201_CREATED)
    async def apply(self, data: JSONBody[Application], state: State) -> Created:
        commands: Commands = state.commands
        member = await commands.apply(
            cmd.ApplyToJoin(details=member_details(data, await auth.hash_password(data.password)))
        )
        return Created(id=member, status="pending")

    @post("/invitations", operation_id="invite", status_code=HTTP_201_CREATED)
    async def invite(self, data: JSONBody[InvitationBody], state: State, me: Me) -> InvitationView:
        actor = coordinator(me)
        invitation, token = await state.commands.invite(actor, cmd.Invite(role=data.role))
        return InvitationView(id=invitation, role=data.role, token=token, link=f"/join/{token}")

    @post("/invitations/join", operation_id="joinByInvitation", status_code=HTTP_201_CREATED)
    async def join(self, data: JSONBody[JoinBody], state: State) -> Created:
        details = member_details(data, await auth.hash_password(data.password))
        member = await state.commands.join(cmd.JoinByInvitation(token=data.token, details=details))
        return Created(id=member, status="approved")

    @post("/sessions", operation_id="signIn", status_code=HTTP_201_CREATED)
    async def sign_in(self, request: AnyRequest, data: JSONBody[SignIn], state: State) -> Response[SessionView]:
        token, principal, expires = await sign_in(request, state, data)
        view = SessionView(
            member=principal.member,
            role=principal.role,
            status=principal.status,
            expires=expires,
            csrf_token=principal.csrf,
            token=token if data.kind == "bearer" else None,
        )
        cookies = []
        if data.kind == "cookie":
            cookies.append(session_cookie(token, expires, secure=state.secure_cookies))
        return Response(view, status_code=HTTP_201_CREATED, cookies=cookies)

    @delete("/sessions/current", operation_id="signOut", status_code=HTTP_204_NO_CONTENT)
    async def sign_out(self, state: State, me: Me) -> Response[None]:
        signed_in(me)
        assert me is not None
        async with state.pool.acquire() as conn:
            await state.gate.sign_out(conn, me)
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[expired_cookie()])

    @get("/me", operation_id="getMe")
    async def me_view(self, state: State, me: Me) -> store.MemberView:
        actor = signed_in(me)
        return await member_view(state, actor.member)

    @patch("/me", operation_id="updateProfile")
    async def update(self, data: JSONBody[ProfileBody], state: State, me: Me) -> store.MemberView:
        actor = signed_in(me)
        update = cmd.UpdateProfile(name=data.name, skills=data.skills, area=data.area, bio=data.bio)
        await state.commands.update_profile(actor, update)
        return await member_view(state, actor.member)

    @get("/members", operation_id="listMembers")
    async def members(
        self,
        state: State,
        me: Me,
        status: Annotated[
            Literal["pending", "approved", "rejected", "erased"], QueryParameter(required=False)
        ] = "pending",
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[store.MemberView]:
        coordinator(me)
        async with state.pool.acquire() as conn:
            return await store.members_by_status(conn, status, limit)

    @get("/members/{member_id:str}", operation_id="getMember")
    async def member(self, member_id: FromPath[str], state: State, me: Me) -> store.PublicMember | store.MemberView:
        actor = signed_in(me)
        view = await member_view(state, member_id)
        if actor.member == member_id or actor.role in ("coordinator", "auditor"):
            return view
        if view.status != "approved":
            raise NotFound(f"member {member_id} does not exist")
        return store.PublicMember(id=view.id, name=view.name, skills=view.skills, area=view.area, bio=view.bio)

    @post("/members/{member_id:str}/approval", operation_id="approveMember", status_code=HTTP_200_OK)
    async def approve(self, member_id: FromPath[str], state: State, me: Me) -> store.MemberView:
        await state.commands.approve(coordinator(me), cmd.ApproveMember(member=member_id))
        return await member_view(state, member_id)

    @post("/members/{member_id:str}/rejection", operation_id="rejectMember", status_code=HTTP_200_OK)
    async def reject(self, member_id: FromPath[str], state: State, me: Me) -> store.MemberView:
        await state.commands.reject(coordinator(me), cmd.RejectMember(member=member_id))
        return await member_view(state, member_id)

    @put("/members/{member_id:str}/role", operation_id="changeRole")
    async def role(self, member_id: FromPath[str], data: JSONBody[RoleBody], state: State, me: Me) -> store.MemberView:
        actor = coordinator(me)
        await state.commands.change_role(actor, cmd.ChangeRole(member=member_id, role=data.role))
        return await member_view(state, member_id)

    @post("/members/{member_id:str}/erasure", operation_id="eraseMember", status_code=HTTP_200_OK)
    async def erase(self, member_id: FromPath[str], state: State, me: Me) -> store.MemberView:
        await state.commands.erase(signed_in(me), cmd.EraseMember(member=member_id))
        return await member_view(state, member_id)


class ListingController(Controller):
    path = "/api/listings"
    tags = ("listings",)

    @post("/", operation_id="createListing", status_code=HTTP_201_CREATED)
    async def create(self, data: JSONBody[ListingBody], state: State, me: Me) -> store.ListingView:
        return await listing_view(state, await publish_listing(state, signed_in(me), data))

    @get("/", operation_id="searchListings")
    async def search(
        self,
        state: State,
        q: Annotated[str, QueryParameter(max_length=200)] = "",
        category: Annotated[ev.Category | None, QueryParameter(required=False)] = None,
        kind: Annotated[ev.Kind | None, QueryParameter(required=False)] = None,
        area: Annotated[str | None, QueryParameter(max_length=100, required=False)] = None,
        order: Annotated[Literal["relevance", "newest"], QueryParameter(required=False)] = "relevance",
        cursor: Annotated[str | None, QueryParameter(max_length=500, required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> store.ListingPage:
        """Active listings, ours and our neighbours'. Ranked by relevance when ``q`` is given, else newest first."""
        return await search_listings(
            state, q=q, category=category, kind=kind, area=area, order=order, cursor=cursor, limit=limit
        )

    @get("/{listing_id:str}", operation_id="getListing")
    async def read(self, listing_id: FromPath[str], state: State) -> store.ListingView:
        return await listing_view(state, listing_id)

    @patch("/{listing_id:str}", operation_id="editListing")
    async def edit(
        self, listing_id: FromPath[str], data: JSONBody[ListingPatch], state: State, me: Me
    ) -> store.ListingView:
        actor = signed_in(me)
        await edit_listing(state, actor, listing_id, data)
        return await listing_view(state, listing_id)

    @post("/{listing_id:str}/{action:str}", operation_id="changeListingStatus", status_code=HTTP_200_OK)
    async def status(self, listing_id: FromPath[str], action: FromPath[str], state: State, me: Me) -> store.ListingView:
        """``action`` is pause, resume or withdraw."""
        command = cmd.LISTING_STATUS.get(action)
        if command is None:
            raise NotFound(f"no such action {action!r}: pause, resume or withdraw")
        await state.commands.listing_status(signed_in(me), command(listing=listing_id))
        return await listing_view(state, listing_id, withdrawn=action == "withdraw")

    @get("/mine", operation_id="myListings")
    async def mine(self, state: State, me: Me) -> list[store.ListingView]:
        actor = signed_in(me)
        async with state.pool.acquire() as conn:
            return await store.member_listings(conn, actor.member)


class ExchangeController(Controller):
    path = "/api/exchanges"
    tags = ("exchanges",)

    @post("/", operation_id="proposeExchange", status_code=HTTP_201_CREATED)
    async def propose(self, request: AnyRequest, data: JSONBody[ProposalBody], state: State) -> store.ExchangeView:
        who = caller(request, state)
        commands: Commands = state.commands
        proposal = cmd.ProposeExchange(
            listing=data.listing,
            providers=data.providers,
            receivers=data.receivers,
            note=data.note,
            category=data.category,
        )
        return await commands.propose(who, proposal)

    @get("/", operation_id="myExchanges")
    async def mine(
        self,
        state: State,
        me: Me,
        open: Annotated[bool, QueryParameter(required=False)] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> list[store.ExchangeView]:
        actor = signed_in(me)
        async with state.pool.acquire() as conn:
            return await store.member_exchanges(conn, actor.member, open_only=open, limit=limit)

    @get("/disputes", operation_id="disputedExchanges")
    async def disputes(self, state: State, me: Me) -> list[store.ExchangeView]:
        coordinator(me)
        async with state.pool.acquire() as conn:
            return await store.disputed_exchanges(conn, 200)

    @get("/{exchange_id:str}", operation_id="getExchange")
    async def read(self, exchange_id: FromPath[str], state: State, me: Me) -> store.ExchangeView:
        return await exchange_view(state, exchange_id, signed_in(me))

    @post("/{exchange_id:str}/accept", operation_id="acceptExchange", status_code=HTTP_200_OK)
    async def accept(self, exchange_id: FromPath[str], request: AnyRequest, state: State) -> store.ExchangeView:
        return await _act(state, caller(request, state), cmd.AcceptExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/decline", operation_id="declineExchange", status_code=HTTP_200_OK)
    async def decline(self, exchange_id: FromPath[str], request: AnyRequest, state: State) -> store.ExchangeView:
        return await _act(state, caller(request, state), cmd.DeclineExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/cancel", operation_id="cancelExchange", status_code=HTTP_200_OK)
    async def cancel(self, exchange_id: FromPath[str], request: AnyRequest, state: State) -> store.ExchangeView:
        return await _act(state, caller(request, state), cmd.CancelExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/record", operation_id="recordTime", status_code=HTTP_200_OK)
    async def record(
        self, exchange_id: FromPath[str], request: AnyRequest, data: JSONBody[RecordBody], state: State
    ) -> store.ExchangeView:
        who = caller(request, state)
        return await _act(state, who, cmd.RecordTime(exchange=exchange_id, minutes=data.minutes, memo=data.memo))

    @post("/{exchange_id:str}/confirm", operation_id="confirmTime", status_code=HTTP_200_OK)
    async def confirm(self, exchange_id: FromPath[str], request: AnyRequest, state: State) -> store.ExchangeView:
        return await _act(state, caller(request, state), cmd.ConfirmExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/dispute", operation_id="disputeTime", status_code=HTTP_200_OK)
    async def dispute(
        self, exchange_id: FromPath[str], request: AnyRequest, data: JSONBody[DisputeBody], state: State
    ) -> store.ExchangeView:
        who = caller(request, state)
        return await _act(state, who, cmd.DisputeExchange(exchange=exchange_id, reason=data.reason))

    @post("/{exchange_id:str}/resolve", operation_id="resolveDispute", status_code=HTTP_200_OK)
    async def resolve(
        self, exchange_id: FromPath[str], data: JSONBody[ResolveBody], state: State, me: Me
    ) -> store.ExchangeView:
        return await _act(state, coordinator(me), cmd.ResolveDispute(exchange=exchange_id, minutes=data.minutes))


class PaymentController(Controller):
    path = "/api/payments"
    tags = ("payments",)

    @post("/", operation_id="makePayment", status_code=HTTP_201_CREATED)
    async def pay(self, data: JSONBody[PaymentBody], state: State, me: Me) -> store.PaymentView:
        """Send hours to a member, donate to the community pot, or (coordinators) grant from it."""
        actor = signed_in(me)
        return await payment_view(state, await make_payment(state, actor, data), actor)

    @get("/{payment_id:str}", operation_id="getPayment")
    async def read(self, payment_id: FromPath[str], state: State, me: Me) -> store.PaymentView:
        return await payment_view(state, payment_id, signed_in(me))


class AccountController(Controller):
    """A member's hours: balance, statement with their own memos, and what waits for them."""

    path = "/api/me"
    tags = ("members",)

    @get("/balance", operation_id="myBalance")
    async def balance(self, state: State, me: Me) -> Balance:
        return await read_balance(state, await account_of(state, signed_in(me)))

    @get("/statement", operation_id="myStatement")
    async def statement(
        self,
        state: State,
        me: Me,
        before: Annotated[int | None, QueryParameter(ge=0, le=2**62, required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> Statement:
        return await read_statement(state, await account_of(state, signed_in(me)), before=before, limit=limit)

    @get("/actions", operation_id="myActions")
    async def actions(self, state: State, me: Me) -> Actions:
        actor = signed_in(me)
        async with state.pool.acquire() as conn:
            open_exchanges = await store.member_exchanges(conn, actor.member, open_only=True, limit=200)
        return needs_action(actor.member, open_exchanges)

    @get("/payments", operation_id="myPayments")
    async def payments(self, state: State, me: Me) -> list[store.PaymentView]:
        actor = signed_in(me)
        async with state.pool.acquire() as conn:
            return await store.member_payments(conn, actor.member, 100)


class ImpactRow(msgspec.Struct, kw_only=True):
    weeks: int
    rows: list[store.ImpactRow]


class CoordinatorController(Controller):
    path = "/api/impact"
    tags = ("coordinators",)

    @get("/", operation_id="impact")
    async def impact(self, state: State, me: Me, weeks: Annotated[int, QueryParameter(ge=1, le=520)] = 12) -> ImpactRow:
        """Per week and category: hours exchanged, exchanges completed, active members, members helped."""
        coordinator(me)
        until = datetime.now(UTC) + timedelta(days=1)
        async with state.pool.acquire() as conn:
            rows = await store.impact(conn, until - timedelta(weeks=weeks), until)
        return ImpactRow(weeks=weeks, rows=rows)


async def refuse_control_characters(request: AnyRequest) -> None:
    """No id has control characters in it, and PostgreSQL cannot even compare a NUL: refuse such paths up front."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in request.scope["path"]):
        raise NotFound("there is nothing at a path with control characters in it")


@get("/health", operation_id="health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"])
async def ready(state: State) -> dict[str, Any]:
    """Ready once the database answers; ``outbox_pending`` counts commands not yet told to the ledger."""
    async with state.pool.acquire() as conn:
        pending = await conn.fetchval(store.Q["outbox_pending"])
    return {"status": "ready", "outbox_pending": pending}


# ---- Shared with the web pages (services/exchange/pages.py): one place for what both front ends do ----


async def sign_in(request: AnyRequest, state: State, body: SignIn) -> tuple[str, Principal, datetime]:
    """Check the password (rate limited) and open a session (kind=cookie) or an API token."""
    gate: auth.Gate = state.gate
    address = request.client.host if request.client else "unknown"
    async with state.pool.acquire() as conn:
        return await gate.sign_in(
            conn, email=body.email, password=body.password, address=address, kind=body.kind, label=body.label
        )


async def search_listings(
    state: State,
    *,
    q: str,
    category: str | None,
    kind: str | None,
    area: str | None,
    order: str,
    cursor: str | None,
    limit: int,
) -> store.ListingPage:
    if "\x00" in q or (area and "\x00" in area):
        raise Invalid("search text cannot contain NUL characters")
    async with state.pool.acquire() as conn:
        return await store.search(
            conn, q=q, category=category, kind=kind, area=area, order=order, cursor=cursor, limit=limit
        )


async def publish_listing(state: State, actor: Actor, body: ListingBody) -> str:
    text = ev.ListingText(
        title=body.title.strip(),
        description=body.description,
        area=body.area.strip(),
        availability=body.availability,
    )
    commands: Commands = state.commands
    command = cmd.PublishListing(
        kind=body.kind, category=body.category, text=text, shared=body.shared, expires=body.expires
    )
    return await commands.publish(actor, command)


async def edit_listing(state: State, actor: Actor, listing_id: str, body: ListingPatch) -> None:
    # An empty area or availability clears it (title and description cannot be empty).
    commands: Commands = state.commands
    command = cmd.EditListing(
        listing=listing_id,
        category=body.category,
        title=body.title,
        description=body.description,
        area=body.area,
        availability=body.availability,
        shared=body.shared,
        expires=body.expires,
    )
    await commands.edit_listing(actor, command)


async def make_payment(state: State, actor: Actor, body: PaymentBody) -> str:
    """Send hours to a member, donate to the pot, or grant from it; returns the payment id."""
    if body.kind == "donation" and body.to is not None:
        raise Invalid("a donation goes to the community pot: leave out 'to'")
    if body.kind != "donation" and body.to is None:
        raise Invalid("say who receives the hours in 'to'")
    commands: Commands = state.commands
    command = cmd.MakePayment(kind=body.kind, payee=body.to or ev.POT, minutes=body.minutes, memo=body.memo)
    return await commands.pay(actor, command)


async def read_balance(state: State, account: str) -> Balance:
    client: LedgerClient = state.ledger
    try:
        view = await client.account(account)
    except LedgerError as exc:
        raise _ledger_read_error(exc, account) from None
    return Balance(account=account, balance=view.balance, floor=view.floor, ceiling=view.ceiling)


def _ledger_read_error(exc: LedgerError, account: str) -> DomainError:
    """What a member is told when the ledger did not give their account's figures."""
    if isinstance(exc, LedgerRefused) and exc.status == 404:
        return NotFound(f"the ledger holds no account {account}", account=account)
    if isinstance(exc, LedgerRefused) and exc.status in (401, 403):
        # The member did nothing wrong: the exchange's own credentials for the ledger were refused.
        return Unavailable("the ledger refused the exchange's credentials; a coordinator must check its token")
    if isinstance(exc, LedgerRefused):
        return Conflict(f"the ledger refused to read account {account}: {exc}", account=account)
    return Unavailable(f"the ledger cannot be reached right now; try again later ({exc})")


async def read_statement(state: State, account: str, *, before: int | None, limit: int) -> Statement:
    """The account's ledger lines, newest first, with the member's own memos where the exchange holds them."""
    client: LedgerClient = state.ledger
    try:
        page = await client.statement(account, before=before, limit=limit)
    except LedgerError as exc:
        raise _ledger_read_error(exc, account) from None
    refs = [line.exchange_ref for line in page.lines if line.exchange_ref]
    async with state.pool.acquire() as conn:
        memos = await store.memos(conn, refs, [line.transfer for line in page.lines])
    return Statement(
        account=account,
        entries=[
            StatementEntry(
                index=line.index,
                at=line.at,
                delta=line.delta,
                balance=line.balance,
                transfer=line.transfer,
                counterparty=line.counterparty,
                exchange_ref=line.exchange_ref,
                memo=memos.get(line.transfer) or memos.get(line.exchange_ref or ""),
            )
            for line in page.lines
        ],
        next_before=page.next_before,
    )


def needs_action(member: str, exchanges: list[store.ExchangeView]) -> Actions:
    answer, record, confirm, others = [], [], [], []
    for ex in exchanges:
        mine = next((p for p in ex.parties if p.member == member), None)
        if mine is None:
            continue
        if ex.status == "proposed" and mine.answer is None:
            answer.append(ex)
        elif (
            mine.side == "provider"
            and any(line.provider == member and line.state == "open" for line in ex.lines)
            and ex.status not in ("proposed",)
        ):
            record.append(ex)
        elif mine.side == "receiver" and any(line.receiver == member and line.state == "recorded" for line in ex.lines):
            confirm.append(ex)
        else:
            others.append(ex)
    return Actions(to_answer=answer, to_record=record, to_confirm=confirm, waiting_for_others=others)


def session_cookie(token: str, expires: datetime, *, secure: bool) -> Cookie:
    return Cookie(
        key=auth.SESSION_COOKIE,
        value=token,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
        expires=int(expires.timestamp()),
    )


def expired_cookie() -> Cookie:
    return Cookie(key=auth.SESSION_COOKIE, value="", max_age=0, path="/", httponly=True, samesite="lax")


async def member_view(state: State, member_id: str) -> store.MemberView:
    async with state.pool.acquire() as conn:
        view = await store.member(conn, member_id)
    if view is None:
        raise NotFound(f"member {member_id} does not exist")
    return view


async def listing_view(state: State, listing_id: str, *, withdrawn: bool = False) -> store.ListingView:
    """The listing as members see it; a withdrawn one is gone (``withdrawn``: show it, to whoever withdrew it)."""
    async with state.pool.acquire() as conn:
        view = await store.listing(conn, listing_id)
    if view is None or (view.status == "withdrawn" and not withdrawn):
        raise NotFound(f"listing {listing_id} does not exist")
    return view


async def exchange_view(state: State, exchange_id: str, actor: Actor) -> store.ExchangeView:
    async with state.pool.acquire() as conn:
        found = await store.exchanges(conn, [exchange_id])
    if not found or (
        actor.member not in {p.member for p in found[0].parties} and actor.role not in ("coordinator", "auditor")
    ):
        raise NotFound(f"exchange {exchange_id} does not exist")
    return found[0]


async def _act(state: State, who: Actor | auth.Credentials, command: cmd.ExchangeCommand) -> store.ExchangeView:
    """Act on the exchange and answer with it as the action left it."""
    commands: Commands = state.commands
    return await commands.act(who, command)


async def payment_view(state: State, payment_id: str, actor: Actor) -> store.PaymentView:
    async with state.pool.acquire() as conn:
        view = await store.payment(conn, payment_id)
    if view is None or (
        actor.member not in (view.payer, view.payee, view.made_by) and actor.role not in ("coordinator", "auditor")
    ):
        raise NotFound(f"payment {payment_id} does not exist")
    return view


async def account_of(state: State, actor: Actor) -> str:
    async with state.pool.acquire() as conn:
        view = await store.member(conn, actor.member)
    if view is None or view.account is None:
        raise Conflict("you have no ledger account yet: it opens when a coordinator approves you")
    return view.account
