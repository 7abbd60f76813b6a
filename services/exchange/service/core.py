"""What every command shares: the unit-of-work loop that retries lost races, ids and digests, and the reads
commands check members with."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import asyncpg

from services.exchange import events as ev
from services.exchange.domain.members import Member, MemberStatus
from services.exchange.eventstore import StreamConflict
from services.exchange.store import Q
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from shared.errors import Conflict, NotFound

log = logging.getLogger("timebank.exchange")

T = TypeVar("T")

POT_KEY = "exchange/pot"


class Core:
    """The pool, the settings commands need, and the loop that runs each command's unit of work."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        wake: Callable[[], None] = lambda: None,
        listing_days: int = 90,
        invitation_days: int = 14,
        limiter_secret: bytes = b"",
    ) -> None:
        self.pool = pool
        # The sign-in limiter's key (the Gate's): erasure forgets the member's failed sign-ins by it.
        self.limiter_secret = limiter_secret
        self.wake = wake
        self.listing_days = listing_days
        self.invitation_days = invitation_days

    async def _tx(self, work: Callable[[Unit], Awaitable[T]], *, transaction: bool = False) -> T:
        """Run ``work`` and send its writes as one statement, retrying from fresh reads after a lost race.

        ``transaction``: for work that reads its own writes (it flushes them on the way), everything inside one
        transaction. Otherwise the reads need none (each sees committed state, as in a READ COMMITTED
        transaction) and the one statement at the end is atomic by itself.
        """
        for _ in range(8):
            async with self.pool.acquire() as conn:
                unit = Unit(conn, Vault(conn))
                try:
                    if transaction:
                        async with conn.transaction():
                            result = await work(unit)
                            await unit.flush()
                    else:
                        result = await work(unit)
                        await unit.flush()
                except (StreamConflict, asyncpg.DeadlockDetectedError):
                    continue
                except asyncpg.IntegrityConstraintViolationError as exc:
                    # Rolled back now: whether the work lost a race can be asked (``flush`` asks it outside one).
                    if transaction and await unit.lost_race():
                        continue
                    if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == "members_email":
                        raise Conflict("a member with this email address already exists") from None
                    raise
            if unit.enqueued:
                self.wake()
            return result
        raise Conflict("too many concurrent changes to the same item; try again")

    async def _accounts(self, u: Unit, parties: list[str], members: dict[str, Member] | None = None) -> dict[str, str]:
        """Ledger accounts of members (or of the pot); refuses while one is not open yet."""
        known = dict(members or {})
        missing = [p for p in parties if p != ev.POT and p not in known]
        if missing:
            known.update(await member_states(u, missing))
        found: dict[str, str] = {}
        for party in parties:
            if party == ev.POT:
                account = await u.conn.fetchval(Q["pot_account"])
            else:
                member = known.get(party)
                if member is None:
                    raise NotFound(f"member {party} does not exist", member=party)
                if member.status != "approved":
                    raise Conflict(f"member {party} is {member.status}", member=party)
                account = member.account
            if account is None:
                raise Conflict(f"the ledger account of {party} is still being opened; try again shortly")
            found[party] = account
        return found


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def memo_digest(salt: bytes, text: str) -> str:
    """SHA-256(salt || memo), what the ledger's public log holds instead of the memo."""
    return hashlib.sha256(salt + text.encode()).hexdigest()


def account_key(member: str) -> str:
    return f"exchange/{member}"


async def member_states(u: Unit, ids: list[str]) -> dict[str, Member]:
    """Members as commands check them (status, role, ledger account), from the read model in one round trip."""
    return {r["id"]: member_of(r) for r in await u.conn.fetch(Q["member_states"], ids)}


def member_of(row: Any) -> Member:
    return Member(id=row["id"], status=cast("MemberStatus", row["status"]), role=row["role"], account=row["account"])


def exists(value: T | None, what: str, ident: str) -> T:
    if value is None:
        raise NotFound(f"{what} {ident} does not exist")
    return value


def fields_of(struct: Any) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


async def details_of(vault: Vault, history: list[ev.AnyEvent]) -> ev.MemberDetails | None:
    last = next(e for e in reversed(history) if isinstance(e, ev.MemberApplied | ev.ProfileUpdated))
    return await vault.open(last.details, ev.MemberDetails)
