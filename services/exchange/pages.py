"""The exchange's web pages for members and coordinators: plain HTML forms that post, then redirect (303) to
the next page, over the same commands and read side as the JSON API. They work without any script.

A refused form (a DomainError) comes back with the problem's detail and its 4xx status; a member page asked for
while signed out redirects to /login.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from services.exchange import auth, forms, store
from services.exchange import commands as cmd
from services.exchange import events as ev
from services.exchange.actions import allowed_actions
from services.exchange.api import access, exchanges, listings, members, payments, schema
from services.exchange.domain import Actor
from services.exchange.forms import HEADERS, SignInNeeded, Visit, Visitor, duration, optional, read_form
from services.exchange.service import reads
from shared.errors import DomainError, Invalid, NotFound, TooManyRequests
from shared.web import AnyRequest

SEARCH_PAGE = 20
STATEMENT_PAGE = 20
IMPACT_WEEKS = 12
EXCHANGE_ACTIONS = ("accept", "decline", "cancel", "record", "confirm", "dispute", "resolve")


# ---- Finding listings ----


@get("/", operation_id="homePage", include_in_schema=False)
async def home(
    visit: Visitor,
    q: FromQuery[str] = "",
    category: FromQuery[str] = "",
    kind: FromQuery[str] = "",
    area: FromQuery[str] = "",
    order: FromQuery[str] = "",
    cursor: FromQuery[str] = "",
) -> Template:
    """Search (text, category, kind, area; best match or newest) over our listings and our neighbours'."""
    search = {
        "q": q.strip()[:200],
        "category": category if category in ev.CATEGORIES else "",
        "kind": kind if kind in ("offer", "request") else "",
        "area": area.strip()[:100],
        "order": order if order in ("relevance", "newest") else ("relevance" if q.strip() else "newest"),
    }
    try:
        found = await listings.search_listings(
            visit.pool,
            q=search["q"],
            category=search["category"] or None,
            kind=search["kind"] or None,
            area=search["area"] or None,
            order=search["order"],
            cursor=cursor or None,
            limit=SEARCH_PAGE,
        )
    except DomainError as exc:
        return visit.failed(exc, "home.html", search=search, listings=[], more=None, first=True)
    more = None
    if found.next:
        more = "?" + urlencode({k: v for k, v in {**search, "cursor": found.next}.items() if v})
    return visit.page("home.html", search=search, listings=found.items, more=more, first=not cursor)


# ---- Joining and signing in ----


def _application(form: dict[str, str], token: str | None = None) -> dict[str, Any]:
    if form.get("password", "") != form.get("password_again", ""):
        raise Invalid("the two passwords differ; type the same password twice")
    data: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "email": form.get("email", "").strip(),
        "password": form.get("password", ""),
        "skills": forms.skills(form.get("skills", "")),
        "area": form.get("area", "").strip(),
        "bio": form.get("bio", ""),
    }
    if token is not None:
        data["token"] = token
    return data


@get("/join", operation_id="joinPage", include_in_schema=False)
async def join_form(visit: Visitor) -> Template:
    return visit.page("join.html", invitation=None, token=None)


@post("/join", operation_id="applyForm", include_in_schema=False)
async def apply(visit: Visitor) -> Template | Redirect:
    """An application to join: it waits for a coordinator."""
    try:
        visit.check_form_token()
        body = read_form(schema.Application, _application(visit.form))
        await visit.commands.apply(
            cmd.ApplyToJoin(details=members.member_details(body, await auth.hash_password(body.password)))
        )
    except DomainError as exc:
        return visit.failed(exc, "join.html", invitation=None, token=None)
    return visit.redirect("/login", "applied")


@get("/join/{token:str}", operation_id="invitationPage", include_in_schema=False)
async def invitation_form(visit: Visitor, token: FromPath[str]) -> Template:
    invitation = await reads.invitation(visit.pool, token)
    return visit.page("join.html", invitation=invitation, token=token, now=datetime.now(UTC))


@post("/join/{token:str}", operation_id="joinForm", include_in_schema=False)
async def join(visit: Visitor, token: FromPath[str]) -> Template | Redirect:
    """Join by invitation: the new member is approved at once and signed in."""
    invitation = await reads.invitation(visit.pool, token)
    try:
        visit.check_form_token()
        body = read_form(schema.JoinBody, _application(visit.form, token))
        details = members.member_details(body, await auth.hash_password(body.password))
        await visit.commands.join(cmd.JoinByInvitation(token=token, details=details))
        session, _, expires = await access.sign_in(
            visit.request,
            visit.gate,
            visit.pool,
            schema.SignIn(email=body.email, password=body.password, kind="cookie"),
        )
    except DomainError as exc:
        return visit.failed(exc, "join.html", invitation=invitation, token=token, now=datetime.now(UTC))
    cookie = access.session_cookie(session, expires, secure=visit.secure_cookies)
    return visit.redirect("/me", "joined", cookies=[cookie])


@get("/login", operation_id="signInPage", include_in_schema=False)
async def login_form(visit: Visitor, next: FromQuery[str] = "") -> Template:
    return visit.page("login.html", next=forms.safe_next(next))


@post("/login", operation_id="signInForm", include_in_schema=False)
async def login(visit: Visitor) -> Template | Redirect:
    """Check the password (rate limited) and open a browser session; the cookie is HttpOnly, SameSite=Lax."""
    target = forms.safe_next(visit.form.get("next"))
    try:
        visit.check_form_token()
        f = visit.form
        credentials = {"email": f.get("email", "").strip(), "password": f.get("password", ""), "kind": "cookie"}
        body = read_form(schema.SignIn, credentials)
        session, _, expires = await access.sign_in(visit.request, visit.gate, visit.pool, body)
    except TooManyRequests as exc:
        minutes = max(1, round(exc.retry_after / 60))
        return visit.page(
            "login.html",
            status=exc.status,
            error=f"Too many failed sign-ins. Wait about {minutes} minute{'s' if minutes != 1 else ''} and try again.",
            headers={"Retry-After": str(exc.retry_after)},
            next=target,
        )
    except DomainError as exc:
        detail = "Wrong email address or password." if exc.status == 401 else exc.detail
        return visit.page("login.html", status=exc.status, error=detail, next=target)
    cookie = access.session_cookie(session, expires, secure=visit.secure_cookies)
    return visit.redirect(target, cookies=[cookie])


@post("/logout", operation_id="signOutForm", include_in_schema=False)
async def logout(visit: Visitor) -> Redirect:
    if visit.me is not None:
        await access.sign_out(visit.gate, visit.pool, visit.me)
    return visit.redirect("/", "signed_out", cookies=[access.expired_cookie()])


# ---- A member's own page ----


@get("/me", operation_id="myPage", include_in_schema=False)
async def me_page(visit: Visitor, before: FromQuery[int | None] = None) -> Template:
    return await _me(visit, before=before)


async def _me(visit: Visit, *, before: int | None = None, status: int = 200, error: str | None = None) -> Template:
    """Balance, statement, what waits for me, my listings, my profile."""
    actor = visit.actor()
    member = await reads.member(visit.pool, actor.member)
    # The same reads as the API's (GET /api/listings/mine, GET /api/exchanges?open=true).
    own = [v for v in await listings.member_listings(visit.pool, actor.member) if v.status != "withdrawn"]
    open_exchanges = await exchanges.member_exchanges(visit.pool, actor.member, open_only=True, limit=100)
    if member is None:
        raise NotFound("this page is for members; the network's coordinator token has no member page")
    balance, statement, ledger_problem = None, None, None
    if member.account is not None:
        try:
            balance = await payments.read_balance(visit.ledger, member.account)
            statement = await payments.read_statement(
                visit.ledger, visit.pool, member.account, before=before, limit=STATEMENT_PAGE
            )
        except DomainError as exc:
            ledger_problem = exc.detail
    accounts = sorted({e.counterparty for e in statement.entries}) if statement else []
    return visit.page(
        "me.html",
        status=status,
        error=error,
        member=member,
        balance=balance,
        statement=statement,
        counterparties=await reads.counterparties(visit.pool, accounts),
        ledger_problem=ledger_problem,
        actions=exchanges.needs_action(actor.member, open_exchanges),
        names=await reads.party_names(visit.pool, open_exchanges),
        titles=await reads.listing_titles(visit.pool, open_exchanges),
        listings=own,
    )


@post("/me/profile", operation_id="profileForm", include_in_schema=False)
async def profile(visit: Visitor) -> Template | Redirect:
    actor = visit.actor()
    f = visit.form
    try:
        body = read_form(
            schema.ProfileBody,
            {
                "name": f.get("name", "").strip(),
                "skills": forms.skills(f.get("skills", "")),
                "area": f.get("area", "").strip(),
                "bio": f.get("bio", ""),
            },
        )
        await visit.commands.update_profile(
            actor, cmd.UpdateProfile(name=body.name, skills=body.skills, area=body.area, bio=body.bio)
        )
    except DomainError as exc:
        return await _me(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/me", "profile")


@post("/me/erase", operation_id="eraseForm", include_in_schema=False)
async def erase(visit: Visitor) -> Template | Redirect:
    """Erase my personal data for good (the ledger keeps only the pseudonymous account); signs me out."""
    actor = visit.actor()
    try:
        if visit.form.get("confirm") != "yes":
            raise Invalid("tick the box to confirm that you want your personal data erased for good")
        await visit.commands.erase(actor, cmd.EraseMember(member=actor.member))
    except DomainError as exc:
        return await _me(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/", "erased", cookies=[access.expired_cookie()])


# ---- Listings ----


def _listing_data(form: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": form.get("kind", ""),
        "category": form.get("category", ""),
        "title": form.get("title", "").strip(),
        "description": form.get("description", ""),
        "area": form.get("area", "").strip(),
        "availability": form.get("availability", "").strip(),
        "shared": form.get("shared") == "yes",
        "expires": forms.expiry(form.get("expires", "")),
    }
    return data


@get("/listings/new", operation_id="newListingPage", include_in_schema=False)
async def new_listing_form(visit: Visitor, kind: FromQuery[str] = "offer") -> Template:
    visit.actor()
    return visit.page("listing_form.html", listing=None, kind=kind if kind in ("offer", "request") else "offer")


@post("/listings/new", operation_id="newListingForm", include_in_schema=False)
async def new_listing(visit: Visitor) -> Template | Redirect:
    actor = visit.actor()
    try:
        body = read_form(schema.ListingBody, _listing_data(visit.form))
        listing = await listings.publish_listing(visit.commands, actor, body)
    except DomainError as exc:
        return visit.failed(exc, "listing_form.html", listing=None, kind=visit.form.get("kind", "offer"))
    return visit.redirect(f"/listings/{listing}", "published")


@get("/listings/{listing_id:str}", operation_id="listingPage", include_in_schema=False)
async def listing_page(visit: Visitor, listing_id: FromPath[str]) -> Template:
    return visit.page("listing.html", listing=await listings.listing_view(visit.pool, listing_id))


@post("/listings/{listing_id:str}/propose", operation_id="proposeForm", include_in_schema=False)
async def propose(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    """Propose an exchange on a listing: the proposer takes the other side of it."""
    actor = visit.actor()
    listing = await listings.listing_view(visit.pool, listing_id)
    try:
        body = read_form(schema.ProposalBody, {"listing": listing_id, "note": optional(visit.form, "note")})
        exchange = (await visit.commands.propose(actor, cmd.ProposeExchange(listing=listing_id, note=body.note))).id
    except DomainError as exc:
        return visit.failed(exc, "listing.html", listing=listing)
    return visit.redirect(f"/exchanges/{exchange}", "proposed")


async def _own_listing(visit: Visit, actor: Actor, listing_id: str) -> store.ListingView:
    listing = await listings.listing_view(visit.pool, listing_id)
    if listing.member != actor.member:
        raise NotFound(f"listing {listing_id} is not one of yours")
    return listing


@get("/listings/{listing_id:str}/edit", operation_id="editListingPage", include_in_schema=False)
async def edit_listing_form(visit: Visitor, listing_id: FromPath[str]) -> Template:
    listing = await _own_listing(visit, visit.actor(), listing_id)
    return visit.page("listing_form.html", listing=listing, kind=listing.kind)


@post("/listings/{listing_id:str}/edit", operation_id="editListingForm", include_in_schema=False)
async def edit_listing(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    actor = visit.actor()
    listing = await _own_listing(visit, actor, listing_id)
    try:
        data = _listing_data(visit.form)
        data.pop("kind")
        await listings.edit_listing(visit.commands, actor, listing_id, read_form(schema.ListingPatch, data))
    except DomainError as exc:
        return visit.failed(exc, "listing_form.html", listing=listing, kind=listing.kind)
    return visit.redirect(f"/listings/{listing_id}", "edited")


@post("/listings/{listing_id:str}/status", operation_id="listingStatusForm", include_in_schema=False)
async def listing_status(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    """Pause, resume or withdraw one of my listings (from my page)."""
    actor = visit.actor()
    action = visit.form.get("action", "")
    try:
        command = cmd.LISTING_STATUS.get(action)
        if command is None:
            raise Invalid("choose pause, resume or withdraw")
        await visit.commands.listing_status(actor, command(listing=listing_id))
    except DomainError as exc:
        return await _me(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/me", action)


# ---- Exchanges ----


async def _exchange(visit: Visit, exchange_id: str, *, status: int = 200, error: str | None = None) -> Template:
    actor = visit.actor()
    ex = await exchanges.exchange_view(visit.pool, exchange_id, actor)
    return visit.page(
        "exchange.html",
        status=status,
        error=error,
        ex=ex,
        can=allowed_actions(ex, actor),
        names=await reads.party_names(visit.pool, [ex]),
        titles=await reads.listing_titles(visit.pool, [ex]),
    )


@get("/exchanges/{exchange_id:str}", operation_id="exchangePage", include_in_schema=False)
async def exchange_page(visit: Visitor, exchange_id: FromPath[str]) -> Template:
    return await _exchange(visit, exchange_id)


@post("/exchanges/{exchange_id:str}/{action:str}", operation_id="exchangeActionForm", include_in_schema=False)
async def exchange_action(visit: Visitor, exchange_id: FromPath[str], action: FromPath[str]) -> Template | Redirect:
    """Accept, decline, cancel, record time, confirm, dispute or (coordinators) resolve."""
    actor = visit.actor()
    if action not in EXCHANGE_ACTIONS:
        raise NotFound(f"no such action {action!r}")
    f = visit.form
    try:
        await visit.commands.act(actor, _exchange_command(visit, exchange_id, action))
    except DomainError as exc:
        return await _exchange(visit, exchange_id, status=exc.status, error=exc.detail)
    return visit.redirect(forms.safe_next(f.get("next"), f"/exchanges/{exchange_id}"), action)


def _exchange_command(visit: Visit, exchange_id: str, action: str) -> cmd.ExchangeCommand:
    """The command an exchange page's form asks for (``action`` is one of EXCHANGE_ACTIONS)."""
    f = visit.form
    match action:
        case "accept":
            return cmd.AcceptExchange(exchange=exchange_id)
        case "decline":
            return cmd.DeclineExchange(exchange=exchange_id)
        case "cancel":
            return cmd.CancelExchange(exchange=exchange_id)
        case "record":
            body = read_form(schema.RecordBody, {"minutes": duration(f), "memo": optional(f, "memo")})
            return cmd.RecordTime(exchange=exchange_id, minutes=body.minutes, memo=body.memo)
        case "confirm":
            return cmd.ConfirmExchange(exchange=exchange_id)
        case "dispute":
            reason = read_form(schema.DisputeBody, {"reason": f.get("reason", "")}).reason
            return cmd.DisputeExchange(exchange=exchange_id, reason=reason)
        case _:
            visit.coordinator()
            minutes = read_form(schema.ResolveBody, {"minutes": duration(f)}).minutes
            return cmd.ResolveDispute(exchange=exchange_id, minutes=minutes)


# ---- Sending hours ----


async def _send(visit: Visit, *, to: str = "", status: int = 200, error: str | None = None) -> Template:
    visit.actor()
    recipient = await reads.recipient_name(visit.pool, to) if to else None
    return visit.page("send.html", status=status, error=error, to=to, recipient=recipient)


@get("/send", operation_id="sendPage", include_in_schema=False)
async def send_form(visit: Visitor, to: FromQuery[str] = "") -> Template:
    return await _send(visit, to=to[:40])


@post("/send", operation_id="sendForm", include_in_schema=False)
async def send(visit: Visitor) -> Template | Redirect:
    """Send hours to a member, or donate them to the community pot."""
    actor = visit.actor()
    f = visit.form
    kind = "donation" if f.get("kind") == "donation" else "send"
    try:
        data = {"kind": kind, "minutes": duration(f), "memo": optional(f, "memo")}
        if kind == "send":
            data["to"] = f.get("to", "").strip()
        await payments.make_payment(visit.commands, actor, read_form(schema.PaymentBody, data))
    except DomainError as exc:
        return await _send(visit, to=f.get("to", "")[:40], status=exc.status, error=exc.detail)
    return visit.redirect("/me", "donated" if kind == "donation" else "sent")


# ---- Coordinators ----


async def _coordinate(
    visit: Visit, *, status: int = 200, error: str | None = None, invitation: dict[str, str] | None = None
) -> Template:
    visit.coordinator()
    # The same reads as the API's (members, disputes, impact).
    pending = await members.members_by_status(visit.pool, "pending", 100)
    disputes = await exchanges.disputed_exchanges(visit.pool, 100)
    impact = await payments.impact(visit.pool, IMPACT_WEEKS)
    pot = await reads.pot_account(visit.pool)
    pot_balance, pot_problem = None, None
    if pot is not None:
        try:
            pot_balance = await payments.read_balance(visit.ledger, pot)
        except DomainError as exc:
            pot_problem = exc.detail
    return visit.page(
        "coordinate.html",
        status=status,
        error=error,
        pending=pending,
        disputes=disputes,
        names=await reads.party_names(visit.pool, disputes),
        weeks=reads.by_week(impact),
        pot_balance=pot_balance,
        pot_problem=pot_problem,
        invitation=invitation,
        impact_weeks=IMPACT_WEEKS,
    )


@get("/coordinate", operation_id="coordinatePage", include_in_schema=False)
async def coordinate(visit: Visitor) -> Template:
    return await _coordinate(visit)


@post("/coordinate/members/{member_id:str}/{decision:str}", operation_id="decideForm", include_in_schema=False)
async def decide(visit: Visitor, member_id: FromPath[str], decision: FromPath[str]) -> Template | Redirect:
    """Approve or reject an application."""
    actor = visit.coordinator()
    try:
        if decision == "approve":
            await visit.commands.approve(actor, cmd.ApproveMember(member=member_id))
        elif decision == "reject":
            await visit.commands.reject(actor, cmd.RejectMember(member=member_id))
        else:
            raise NotFound(f"no such decision {decision!r}: approve or reject")
    except DomainError as exc:
        return await _coordinate(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/coordinate", "approved" if decision == "approve" else "rejected")


@post("/coordinate/invitations", operation_id="inviteForm", include_in_schema=False)
async def invite(visit: Visitor) -> Template:
    """A new invitation link, shown once on the page that answers this form (it is a secret)."""
    actor = visit.coordinator()
    try:
        body = read_form(schema.InvitationBody, {"role": visit.form.get("role", "member")})
        _, token = await visit.commands.invite(actor, cmd.Invite(role=body.role))
    except DomainError as exc:
        return await _coordinate(visit, status=exc.status, error=exc.detail)
    link = str(visit.request.base_url).rstrip("/") + f"/join/{token}"
    return await _coordinate(visit, status=201, invitation={"role": body.role, "link": link})


@post("/coordinate/grants", operation_id="grantForm", include_in_schema=False)
async def grant(visit: Visitor) -> Template | Redirect:
    """A grant of hours from the community pot to a member."""
    actor = visit.coordinator()
    f = visit.form
    try:
        data = {"kind": "grant", "to": f.get("to", "").strip(), "minutes": duration(f), "memo": optional(f, "memo")}
        await payments.make_payment(visit.commands, actor, read_form(schema.PaymentBody, data))
    except DomainError as exc:
        return await _coordinate(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/coordinate", "granted")


# ---- Errors ----


def _to_sign_in(request: AnyRequest, exc: SignInNeeded) -> Redirect:
    base = str(request.scope.get("root_path", "")).rstrip("/")
    target = request.url.path[len(base) :] if request.method in forms.SAFE_METHODS else "/me"
    return Redirect(f"{base}/login?" + urlencode({"next": target}), status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A refusal or a broken request as a page of its own (not a JSON problem)."""
    if isinstance(exc, DomainError):
        status, detail = exc.status, exc.detail
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        status, detail = exc.status_code, exc.detail
    else:
        request.logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        status, detail = HTTP_500_INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again."
    return Template(
        template_name="error.html",
        context={
            "me": None,
            "my_name": "",
            "csrf": "",
            "base": str(request.scope.get("root_path", "")).rstrip("/"),
            "origin": request.app.state.origin,
            "notice": None,
            "error": None,
            "status": status,
            "detail": detail,
        },
        status_code=status,
        headers=HEADERS,
    )


ROUTER = Router(
    path="/",
    route_handlers=[
        home,
        join_form,
        apply,
        invitation_form,
        join,
        login_form,
        login,
        logout,
        me_page,
        profile,
        erase,
        new_listing_form,
        new_listing,
        listing_page,
        propose,
        edit_listing_form,
        edit_listing,
        listing_status,
        exchange_page,
        exchange_action,
        send_form,
        send,
        coordinate,
        decide,
        invite,
        grant,
    ],
    dependencies={"visit": Provide(forms.open_visit)},
    exception_handlers={SignInNeeded: _to_sign_in, DomainError: _error_page, HTTPException: _error_page},
)
