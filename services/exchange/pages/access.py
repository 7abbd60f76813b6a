"""Joining and signing in: applying, joining by invitation, signing in and out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from services.exchange import auth, forms
from services.exchange import commands as cmd
from services.exchange.api import access, members, schema
from services.exchange.forms import Visitor, read_form
from services.exchange.service import reads
from shared.errors import DomainError, Invalid, TooManyRequests


def _application(form: dict[str, str], token: str | None = None) -> dict[str, Any]:
    """The join form as the JSON API's application body (with the invitation's ``token`` when there is one)."""
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
