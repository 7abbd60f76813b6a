"""Who is calling the exchange: passwords (argon2id), sessions, bearer tokens, CSRF and the login rate limit.

Browsers hold a session cookie (HttpOnly, SameSite=Lax) and send its CSRF token back in ``X-CSRF-Token`` (or the
``csrf_token`` form field) on every unsafe request; API clients send ``Authorization: Bearer <token>``, which no
other site can make a browser send, so they need no CSRF token. The node's configured coordinator tokens act as
the network's coordinator, which is how the first invitation gets made.

Looking a session up is ``Gate.resolve``; a command that reads the database anyway may instead take the request's
``Credentials`` and look its session up in the same round trip as its first read (``exchange.session`` in SQL),
judging the row with the very same rules (``principal_of``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.exchange.domain.members import Actor
from services.exchange.store import Q
from shared.db import Connection
from shared.errors import Forbidden, TooManyRequests, Unauthorized
from shared.settings import ApiToken

SESSION_COOKIE = "timebank_session"
CSRF_HEADER = "x-csrf-token"
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("timebank: no such member")


@dataclass(frozen=True, slots=True)
class Principal:
    member: str
    role: str
    status: str
    via: str  # "cookie", "bearer" or "network"
    csrf: str = ""
    token_sha256: str = ""

    @property
    def actor(self) -> Actor:
        return Actor(self.member, self.role)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A session token a request presents (API token or browser cookie), before its session is looked up."""

    via: Literal["bearer", "cookie"]
    token_sha256: str
    # Whether the request changes something (a cookie's CSRF token must then come with it).
    unsafe: bool = False
    csrf: str | None = None


class Session(NamedTuple):
    """A live session as ``exchange.session(token_sha256)`` finds it: whose it is, and their role and status."""

    member: str
    kind: str
    csrf: str
    role: str
    status: str

    @classmethod
    def of(cls, row: Any, prefix: str = "") -> Session | None:
        """The session in ``row`` (columns named with ``prefix``), or None when the row holds none."""
        member = row[prefix + "member"]
        if member is None:
            return None
        return cls(member, row[prefix + "kind"], row[prefix + "csrf"], row[prefix + "role"], row[prefix + "status"])


def principal_of(credentials: Credentials, session: Session | None) -> Principal | None:
    """Who presented ``credentials``, given the session found for them: an unknown or expired API token is refused,
    an unknown or expired cookie is no session, and an unsafe request with a cookie needs its session's CSRF token."""
    if credentials.via == "bearer":
        if session is None or session.kind != "bearer":
            raise Unauthorized("unknown or expired token")
        return Principal(session.member, session.role, session.status, "bearer", session.csrf, credentials.token_sha256)
    if session is None or session.kind != "cookie":
        return None  # an expired cookie is simply no session
    principal = Principal(
        session.member, session.role, session.status, "cookie", session.csrf, credentials.token_sha256
    )
    if credentials.unsafe:
        check_csrf(principal, credentials.csrf)
    return principal


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(stored: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Gate:
    """Resolves credentials to a Principal, signs members in and out, and limits failed sign-ins."""

    def __init__(
        self,
        network_tokens: list[ApiToken],
        *,
        session_days: int = 30,
        max_failures: int = 5,
        max_failures_per_address: int = 50,
        window_seconds: int = 900,
        limiter_secret: bytes,
    ) -> None:
        self._network = {t.sha256.lower(): t for t in network_tokens if t.role in ("coordinator", "auditor")}
        self._limiter_secret = limiter_secret
        self.session_days = session_days
        self.max_failures = max_failures
        self.max_failures_per_address = max_failures_per_address
        self.window_seconds = window_seconds

    def credentials(
        self, *, authorization: str | None, cookie: str | None, method: str, csrf: str | None
    ) -> Principal | Credentials | None:
        """What the request presents, without looking anything up: the network's coordinator (whose tokens are
        configured), a session token to look up, or nothing (anonymous). A malformed Authorization is refused."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("use 'Authorization: Bearer <token>'")
            digest = token_digest(token)
            network = self._network.get(digest)
            if network is not None:
                return Principal(f"network:{network.name}", network.role, "approved", "network")
            return Credentials("bearer", digest)
        if cookie:
            return Credentials("cookie", token_digest(cookie), method not in ("GET", "HEAD", "OPTIONS"), csrf)
        return None

    async def resolve(
        self, conn: Connection, *, authorization: str | None, cookie: str | None, method: str, csrf: str | None
    ) -> Principal | None:
        """The caller, or None when anonymous. Unsafe cookie requests must carry the session's CSRF token."""
        found = self.credentials(authorization=authorization, cookie=cookie, method=method, csrf=csrf)
        if not isinstance(found, Credentials):
            return found
        row = await conn.fetchrow(Q["session"], found.token_sha256)
        return principal_of(found, None if row is None else Session.of(row))

    async def sign_in(
        self, conn: Connection, *, email: str, password: str, address: str, kind: str, label: str = ""
    ) -> tuple[str, Principal, datetime]:
        """Check the password (rate limited per email and per address) and open a session or token."""
        email_key = email_limiter_key(self._limiter_secret, email)
        address_key = limiter_key(self._limiter_secret, "ip", address)
        counts = await conn.fetchrow(Q["recent_failures"], email_key, address_key, float(self.window_seconds))
        assert counts is not None
        if counts["by_email"] >= self.max_failures or counts["by_address"] >= self.max_failures_per_address:
            oldest: datetime = counts["oldest"]
            wait = oldest + timedelta(seconds=self.window_seconds) - await _db_now(conn)
            raise TooManyRequests(
                "too many failed sign-ins; wait before trying again", retry_after=max(1, int(wait.total_seconds()) + 1)
            )
        row = await conn.fetchrow(Q["member_by_email"], email.strip())
        ok = await _verify(row["password_hash"] if row else None, password)
        if not ok or row is None:
            await conn.execute(Q["record_failure"], email_key, address_key)
            raise Unauthorized("wrong email or password")
        if row["status"] in ("rejected", "erased"):
            raise Forbidden(f"this membership is {row['status']}")
        await conn.execute(Q["clear_failures"], email_key)
        token = ("tbs_" if kind == "cookie" else "tbk_") + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        expires = await _db_now(conn) + timedelta(days=self.session_days)
        await conn.execute(Q["insert_session"], token_digest(token), row["id"], kind, csrf, label, expires)
        return token, Principal(row["id"], row["role"], row["status"], kind, csrf, token_digest(token)), expires

    async def sign_out(self, conn: Connection, principal: Principal) -> None:
        if principal.token_sha256:
            await conn.execute(Q["delete_session"], principal.token_sha256)


def limiter_key(secret: bytes, kind: str, value: str) -> str:
    """The sign-in limiter's key for an email or client address: a keyed hash, so its table of failed attempts
    names nobody in clear (not even the address of a member erased since), yet counts each the same way."""
    return f"{kind}:" + hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def email_limiter_key(secret: bytes, email: str) -> str:
    """The limiter's key for an email address, however it is capitalised or padded."""
    return limiter_key(secret, "email", email.strip().lower())


def check_csrf(principal: Principal, given: str | None) -> None:
    if principal.via == "cookie" and not (given and hmac.compare_digest(given, principal.csrf)):
        raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header or the csrf_token field)")


async def _db_now(conn: Connection) -> datetime:
    value: datetime = await conn.fetchval(Q["db_now"])
    return value
