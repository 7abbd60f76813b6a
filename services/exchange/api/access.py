"""Who calls: the session or token behind a request, the checks every controller makes, and session cookies."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide

from services.exchange import auth
from services.exchange.api.schema import SignIn
from services.exchange.auth import Principal
from services.exchange.domain.members import Actor
from services.exchange.service import Commands
from services.ledger.client import LedgerClient
from shared.errors import Forbidden, Unauthorized
from shared.web import AnyRequest

Me = NamedDependency[Principal | None]
# The app's resources as handlers declare them (see dependencies()).
CommandsDep = NamedDependency[Commands]
PoolDep = NamedDependency[asyncpg.Pool]
LedgerDep = NamedDependency[LedgerClient]
GateDep = NamedDependency[auth.Gate]
SecureCookiesDep = NamedDependency[bool]


async def current(request: AnyRequest, gate: GateDep, pool: PoolDep) -> Principal | None:
    """The signed-in caller, or None (the ``me`` dependency)."""
    async with pool.acquire() as conn:
        return await gate.resolve(
            conn,
            authorization=request.headers.get("authorization"),
            cookie=request.cookies.get(auth.SESSION_COOKIE),
            method=request.method,
            csrf=request.headers.get(auth.CSRF_HEADER),
        )


def caller(request: AnyRequest, gate: auth.Gate) -> Actor | auth.Credentials:
    """Who calls, for a command that looks their session up itself, with its first read (one round trip fewer
    than resolving ``me`` first). Anonymous callers and malformed credentials are refused here already."""
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


async def sign_in(
    request: AnyRequest, gate: auth.Gate, pool: asyncpg.Pool, body: SignIn
) -> tuple[str, Principal, datetime]:
    """Check the password (rate limited) and open a session (kind=cookie) or an API token."""
    address = request.client.host if request.client else "unknown"
    async with pool.acquire() as conn:
        return await gate.sign_in(
            conn, email=body.email, password=body.password, address=address, kind=body.kind, label=body.label
        )


def session_cookie(token: str, expires: datetime, *, secure: bool) -> Cookie:
    """The browser's session cookie, which ends when its session does (at ``expires``)."""
    # Litestar counts a cookie's expires in seconds from now, as Max-Age does: both say how long the session has left.
    left = max(0, int((expires - datetime.now(UTC)).total_seconds()))
    return Cookie(
        key=auth.SESSION_COOKIE,
        value=token,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
        max_age=left,
        expires=left,
    )


def expired_cookie() -> Cookie:
    return Cookie(key=auth.SESSION_COOKIE, value="", max_age=0, path="/", httponly=True, samesite="lax")


def dependencies(state: State) -> dict[str, Provide]:
    """The typed dependencies of an app whose resources live in ``state`` (its lifespan puts the pool, the ledger
    client and the commands there).

    The providers read that State object directly and take no parameters: one that declared ``state`` would have
    Litestar build a State from the app's and validate it for every dependency of every request."""

    def commands() -> Commands:
        found: Commands = state.commands
        return found

    def pool() -> asyncpg.Pool:
        found: asyncpg.Pool = state.pool
        return found

    def ledger() -> LedgerClient:
        found: LedgerClient = state.ledger
        return found

    def gate() -> auth.Gate:
        found: auth.Gate = state.gate
        return found

    def secure_cookies() -> bool:
        return bool(state.secure_cookies)

    return {
        "commands": Provide(commands, sync_to_thread=False),
        "pool": Provide(pool, sync_to_thread=False),
        "ledger": Provide(ledger, sync_to_thread=False),
        "gate": Provide(gate, sync_to_thread=False),
        "secure_cookies": Provide(secure_cookies, sync_to_thread=False),
        "me": Provide(current),
    }


async def sign_out(gate: auth.Gate, pool: asyncpg.Pool, me: Principal) -> None:
    """End the session (or revoke the API token) ``me`` came with."""
    async with pool.acquire() as conn:
        await gate.sign_out(conn, me)
