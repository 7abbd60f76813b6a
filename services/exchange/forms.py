"""What every web page shares: who is visiting, the CSRF token their forms carry, reading a form into the JSON
API's request Structs (so both front ends validate alike), and how hours, categories and dates are shown.

A signed-in visitor's forms carry their session's CSRF token, which ``Gate.resolve`` checks (``auth.check_csrf``).
Forms used before signing in (sign in, apply, join) carry the token of a separate ``timebank_form`` cookie
(double submit): another site can make a browser post a form, but cannot read or set this site's cookie.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
from jinja2 import StrictUndefined
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template

from services.exchange import auth, store
from services.exchange import events as ev
from services.exchange.auth import Principal
from services.exchange.domain.members import Actor
from services.exchange.service import Commands
from services.ledger.client import LedgerClient
from shared.errors import DomainError, Forbidden, Invalid
from shared.web import AnyRequest

T = TypeVar("T")

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
FORM_COOKIE = "timebank_form"
EXPIRED_FORM = (
    "This form has expired or did not come from this site (its CSRF token is missing or wrong). "
    "Reload the page and try again."
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The pages run no script at all and load nothing from elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# What a page says after a form went through (the redirect carries ``?done=<key>``).
NOTICES = {
    "accept": "You accepted the exchange.",
    "applied": "Thank you for applying. A coordinator will look at your application soon; you can sign in meanwhile.",
    "approved": "The member is approved; their hours account is opening.",
    "cancel": "The exchange is cancelled.",
    "confirm": "You confirmed the time. The hours move in the ledger in a moment.",
    "decline": "You declined the exchange.",
    "dispute": "You disputed the time. A coordinator will look at it.",
    "donated": "Thank you for your donation to the community pot.",
    "edited": "Your listing is updated.",
    "erased": "Your personal data is erased, and you are signed out.",
    "granted": "The grant from the community pot is on its way.",
    "joined": "Welcome! You are a member now.",
    "pause": "Your listing is paused: nobody can find it until you resume it.",
    "profile": "Your profile is updated.",
    "proposed": "Your proposal is sent. You will see here when they answer.",
    "published": "Your listing is published.",
    "record": "The time is recorded. It waits for the other side to confirm.",
    "rejected": "The application is rejected.",
    "resolve": "The dispute is resolved.",
    "resume": "Your listing is active again.",
    "sent": "The hours are on their way.",
    "signed_out": "You are signed out.",
    "withdraw": "Your listing is withdrawn.",
}
FIELD_LABELS = {
    "name": "Name",
    "email": "Email address",
    "password": "Password",
    "skills": "Skills",
    "area": "Area",
    "bio": "About you",
    "kind": "Offer or request",
    "category": "Category",
    "title": "Title",
    "description": "Description",
    "availability": "Availability",
    "note": "Message",
    "memo": "Note",
    "reason": "Reason",
    "minutes": "Time",
    "to": "Member number",
    "role": "Role",
}


class SignInNeeded(Exception):
    """A member page was asked for while signed out: the visitor is sent to the sign-in page."""


@dataclass(slots=True)
class Visit:
    """One page request: the visitor (if signed in), their form's fields, and how to answer them."""

    request: AnyRequest
    state: State
    me: Principal | None
    form: dict[str, str]
    name: str
    form_token: str
    new_form_token: bool

    # The app's resources, typed (the lifespan puts them in the app's state).

    @property
    def commands(self) -> Commands:
        commands: Commands = self.state.commands
        return commands

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.state.pool
        return pool

    @property
    def ledger(self) -> LedgerClient:
        ledger: LedgerClient = self.state.ledger
        return ledger

    @property
    def gate(self) -> auth.Gate:
        gate: auth.Gate = self.state.gate
        return gate

    @property
    def secure_cookies(self) -> bool:
        return bool(self.state.secure_cookies)

    @property
    def base(self) -> str:
        """Where this app is mounted ("" at the root), for links and redirects."""
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    def actor(self) -> Actor:
        """The signed-in member; signed out, the visitor is sent to sign in."""
        if self.me is None:
            raise SignInNeeded
        return self.me.actor

    def coordinator(self) -> Actor:
        actor = self.actor()
        if not actor.coordinator:
            raise Forbidden("this page is for the network's coordinators")
        return actor

    @property
    def csrf(self) -> str:
        """The token this page's forms send back: the session's, or the form cookie's before signing in."""
        if self.me is not None and self.me.via == "cookie":
            return self.me.csrf
        return self.form_token

    def check_form_token(self) -> None:
        """For the forms used before signing in. A signed-in visitor's token was checked on arrival."""
        if self.me is not None and self.me.via == "cookie":
            return
        given = self.form.get("csrf_token", "")
        if self.new_form_token or not hmac.compare_digest(given.encode(), self.form_token.encode()):
            raise Forbidden(EXPIRED_FORM)

    def page(
        self,
        template: str,
        *,
        status: int = 200,
        error: str | None = None,
        cookies: list[Cookie] | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Template:
        """Render a page with what every page needs; the form's fields come back as ``values``."""
        all_cookies = list(cookies or [])
        if self.new_form_token:
            all_cookies.append(
                Cookie(
                    key=FORM_COOKIE,
                    value=self.form_token,
                    path="/",
                    httponly=True,
                    samesite="strict",
                    secure=self.secure_cookies,
                )
            )
        done = self.request.query_params.get("done", "")
        return Template(
            template_name=template,
            context={
                "me": self.me,
                "my_name": self.name,
                "csrf": self.csrf,
                "base": self.base,
                "origin": self.state.origin,
                "notice": NOTICES.get(done),
                "error": error,
                "values": self.form,
                **context,
            },
            status_code=status,
            headers={**HEADERS, **(headers or {})},
            cookies=all_cookies,
        )

    def failed(self, problem: DomainError, template: str, **context: Any) -> Template:
        """The form again, with what went wrong and the problem's 4xx status."""
        return self.page(template, status=problem.status, error=problem.detail, **context)

    def redirect(self, path: str, done: str | None = None, cookies: list[Cookie] | None = None) -> Redirect:
        """See other (303): after a form went through, the browser asks for the next page with GET."""
        if done:
            path += ("&" if "?" in path else "?") + f"done={done}"
        return Redirect(self.base + path, status_code=303, cookies=cookies or [])


# How a page handler asks for its Visit (provided by ``open_visit``).
Visitor = NamedDependency[Visit]


async def open_visit(request: AnyRequest, state: State) -> Visit:
    """Who is visiting. Unsafe requests made with the session cookie must carry its CSRF token."""
    form: dict[str, str] = {}
    if request.method not in SAFE_METHODS:
        for key, value in (await request.form()).items():
            if isinstance(value, str):
                form.setdefault(key, value)
    gate: auth.Gate = state.gate
    async with state.pool.acquire() as conn:
        try:
            me = await gate.resolve(
                conn,
                authorization=request.headers.get("authorization"),
                cookie=request.cookies.get(auth.SESSION_COOKIE),
                method=request.method,
                csrf=form.get("csrf_token") or request.headers.get(auth.CSRF_HEADER),
            )
        except Forbidden:
            raise Forbidden(EXPIRED_FORM) from None
        name = ""
        if me is not None and me.via == "network":
            name = "network coordinator"
        elif me is not None:
            view = await store.member(conn, me.member)
            name = view.name if view is not None else ""
    token = request.cookies.get(FORM_COOKIE, "")
    fresh = not re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    if fresh:
        token = secrets.token_urlsafe(24)
    return Visit(request, state, me, form, name, token, fresh)


def safe_next(target: str | None, default: str = "/me") -> str:
    """A local path to go on to; anything that could lead off this site is replaced by ``default``."""
    if target and re.fullmatch(r"/(?![/\\])[\x21-\x7e]*", target) and "\\" not in target:
        return target
    return default


# ---- Reading forms ----


def read_form(type_: type[T], data: dict[str, Any]) -> T:
    """Convert form fields into one of the API's request Structs, with its limits; refusals read as prose."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise Invalid(explain(str(exc))) from None


_RULES: list[tuple[str, str]] = [
    (r"Expected `str` of length >= 1\b", "cannot be empty"),
    (r"Expected `str` of length >= (\d+)", "must be at least {0} characters long"),
    (r"Expected `str` of length <= (\d+)", "must be at most {0} characters long"),
    (r"Expected `array` of length <= (\d+)", "can list at most {0}"),
    (r"Expected `int` >= (\d+)", "must be at least {0}"),
    (r"Expected `int` <= (\d+)", "must be at most {0}"),
    (r"Invalid enum value", "is not one of the choices"),
    (r"Expected `str` matching regex", "cannot be blank or hold control characters"),
]


def explain(message: str) -> str:
    """Turn msgspec's "Expected `str` of length >= 10 - at `$.password`" into "Password must be at least ..."."""
    text, _, where = message.partition(" - at `$.")
    if not where:
        missing = re.match(r"Object missing required field `(\w+)`", text)
        if missing:
            return f"{FIELD_LABELS.get(missing[1], missing[1])} is required"
        return text
    field = re.match(r"\w+", where)
    name = field[0] if field else ""
    label = FIELD_LABELS.get(name, name)
    if "matching regex" in text and name == "email":
        return "Email address does not look like an email address"
    if "matching regex" in text and name == "to":
        return "Member number should look like mem_ followed by 16 letters and digits"
    if name == "minutes":
        text = text.replace(">= 1", ">= 1 minute").replace("<= 60000", "<= 60000 minutes (1000 hours)")
    for pattern, phrase in _RULES:
        found = re.search(pattern, text)
        if found:
            return f"{label} {phrase.format(*found.groups())}"
    return f"{label}: {text}"


def duration(form: dict[str, str], hours: str = "hours", minutes: str = "minutes") -> int:
    """Minutes from a form's whole hours and minutes fields (either may be left empty)."""
    h, m = form.get(hours, "").strip() or "0", form.get(minutes, "").strip() or "0"
    if not (re.fullmatch(r"[0-9]{1,5}", h) and re.fullmatch(r"[0-9]{1,5}", m)):
        raise Invalid("Time: give whole hours and minutes, e.g. 1 hour and 30 minutes")
    return int(h) * 60 + int(m)


def skills(text: str) -> list[str]:
    """Skills typed as a comma-separated list."""
    return [s.strip() for s in text.split(",") if s.strip()]


def expiry(text: str) -> datetime | None:
    """The end (UTC) of the day a listing should run until; None when not given."""
    if not text.strip():
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid("Runs until: give a date like 2026-12-31") from None
    return datetime.combine(day, time(23, 59), UTC)


def optional(form: dict[str, str], key: str) -> str | None:
    value = form.get(key, "")
    return value if value.strip() else None


# ---- How things look ----


def hm(minutes: int, signed: bool = False) -> str:
    """Minutes as hours:minutes, e.g. 90 -> "1:30", -90 -> "−1:30" (a true minus sign)."""
    sign = "−" if minutes < 0 else ("+" if signed and minutes > 0 else "")
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h}:{m:02d}"


def hm_words(minutes: int) -> str:
    """Minutes as words, for screen readers and titles: "1 hour 30 minutes"."""
    h, m = divmod(abs(minutes), 60)
    parts = [f"{h} hour{'s' if h != 1 else ''}"] if h else []
    if m or not h:
        parts.append(f"{m} minute{'s' if m != 1 else ''}")
    return ("minus " if minutes < 0 else "") + " ".join(parts)


def label(value: str) -> str:
    """A category or state as words: "care_and_health" -> "Care and health"."""
    return value.replace("_", " ").capitalize()


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


def day(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%-d %b %Y")


def configure(engine: JinjaTemplateEngine) -> None:
    """Template filters and globals; undefined names are errors rather than silently empty."""
    env = engine.engine
    env.undefined = StrictUndefined
    env.filters.update(hm=hm, hm_words=hm_words, label=label, when=when, day=day)
    env.globals.update(CATEGORIES=ev.CATEGORIES, ROLES=("member", "coordinator", "auditor"))
