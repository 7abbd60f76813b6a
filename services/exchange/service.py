"""The exchange's command side: one transaction per command that reads streams, decides, seals, appends,
projects and enqueues what the ledger must be told, all or nothing.

Optimistic concurrency: two commands on one stream race to the next version; the loser retries from a fresh
read, so a decision is always made on the latest state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from services.exchange import domain, outbox
from services.exchange import events as ev
from services.exchange.domain import Actor
from services.exchange.eventstore import StreamConflict, append, load
from services.exchange.ledger_client import OpenedAccount, PostedTransfer
from services.exchange.projections import project
from services.exchange.vault import Vault
from shared.db import Connection
from shared.errors import Conflict, Forbidden, Invalid, NotFound

log = logging.getLogger("timebank.exchange")
T = TypeVar("T")

POT_KEY = "exchange/pot"
MAX_LISTING_DAYS = 365
DEFAULT_MEMOS = {"send": "hours sent", "donation": "donation to the pot", "grant": "grant from the pot"}


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def memo_digest(salt: bytes, text: str) -> str:
    """SHA-256(salt || memo), what the ledger's public log holds instead of the memo."""
    return hashlib.sha256(salt + text.encode()).hexdigest()


def account_key(member: str) -> str:
    return f"exchange/{member}"


@dataclass(slots=True)
class Unit:
    """One command's transaction: its connection, vault, and whether it left work for the outbox."""

    conn: Connection
    vault: Vault
    enqueued: bool = False
    loaded: dict[str, int] = field(default_factory=dict)

    async def load(self, stream: str) -> list[ev.AnyEvent]:
        version, history = await load(self.conn, stream)
        self.loaded[stream] = version
        return history

    async def save(self, stream: str, history: list[ev.AnyEvent], new: list[ev.AnyEvent]) -> list[ev.AnyEvent]:
        """Append ``new`` after what ``load`` saw and bring the read model up to date."""
        if not new:
            return history
        await append(self.conn, stream, self.loaded.get(stream, 0), new)
        self.loaded[stream] = self.loaded.get(stream, 0) + len(new)
        full = [*history, *new]
        await project(self.conn, self.vault, stream, full)
        return full

    async def enqueue(self, command: outbox.OutboxCommand) -> None:
        await outbox.enqueue(self.conn, command)
        self.enqueued = True


class Commands:
    """Every state change the exchange makes. Callers pass the acting member; errors are DomainErrors."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        wake: Callable[[], None] = lambda: None,
        listing_days: int = 90,
        invitation_days: int = 14,
    ) -> None:
        self.pool = pool
        self.wake = wake
        self.listing_days = listing_days
        self.invitation_days = invitation_days

    async def _tx(self, work: Callable[[Unit], Awaitable[T]]) -> T:
        for _ in range(8):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    unit = Unit(conn, Vault(conn))
                    result = await work(unit)
            except StreamConflict:
                continue
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "members_email":
                    raise Conflict("a member with this email address already exists") from None
                raise
            if unit.enqueued:
                self.wake()
            return result
        raise Conflict("too many concurrent changes to the same item; try again")

    # ---- Members ----

    async def apply(self, details: ev.MemberDetails) -> str:
        member = new_id("mem")

        async def work(u: Unit) -> str:
            sealed = await u.vault.seal(member, details)
            await u.save(member, [], [ev.MemberApplied(at=now(), member=member, details=sealed)])
            return member

        return await self._tx(work)

    async def invite(self, actor: Actor, role: ev.Role) -> tuple[str, str]:
        """A coordinator's invitation: returns its id and the secret token for the join link."""
        if not actor.coordinator:
            raise Forbidden("only coordinators invite")
        invitation, token = new_id("inv"), "join_" + secrets.token_urlsafe(24)
        created = ev.InvitationCreated(
            at=now(),
            invitation=invitation,
            role=role,
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            expires=now() + timedelta(days=self.invitation_days),
            by=actor.member,
        )

        async def work(u: Unit) -> tuple[str, str]:
            await u.save(invitation, [], [created])
            return invitation, token

        return await self._tx(work)

    async def join(self, token: str, details: ev.MemberDetails) -> str:
        """Join by invitation: the member is approved at once and their ledger account is opened."""
        member = new_id("mem")
        digest = hashlib.sha256(token.encode()).hexdigest()

        async def work(u: Unit) -> str:
            row = await u.conn.fetchrow(
                "SELECT id, used_by, expires FROM exchange.invitations WHERE token_sha256 = $1", digest
            )
            if row is None:
                raise NotFound("this invitation link is not valid")
            history = await u.load(row["id"])
            created = history[0]
            assert isinstance(created, ev.InvitationCreated)
            if any(isinstance(e, ev.InvitationUsed) for e in history):
                raise Conflict("this invitation has already been used")
            if created.expires <= now():
                raise Conflict("this invitation has expired")
            at = now()
            sealed = await u.vault.seal(member, details)
            await u.save(row["id"], history, [ev.InvitationUsed(at=at, invitation=row["id"], member=member)])
            applied = ev.MemberApplied(at=at, member=member, role=created.role, details=sealed, invitation=row["id"])
            await u.save(member, [], [applied])
            await u.enqueue(outbox.OpenLedgerAccount(key=account_key(member), kind="member", member=member))
            return member

        return await self._tx(work)

    async def approve(self, actor: Actor, member_id: str) -> None:
        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            new = domain.approve(member, actor, now())
            await u.save(member_id, history, new)
            if new:
                await u.enqueue(outbox.OpenLedgerAccount(key=account_key(member_id), kind="member", member=member_id))

        await self._tx(work)

    async def reject(self, actor: Actor, member_id: str) -> None:
        await self._member_change(member_id, lambda m: domain.reject(m, actor, now()))

    async def change_role(self, actor: Actor, member_id: str, role: ev.Role) -> None:
        await self._member_change(member_id, lambda m: domain.change_role(m, actor, role, now()))

    async def update_profile(self, actor: Actor, update: dict[str, Any]) -> None:
        """Change some of a member's profile fields (name, skills, area, bio); the rest stay as they were."""

        async def work(u: Unit) -> None:
            history = await u.load(actor.member)
            member = _exists(domain.fold_member(actor.member, history), "member", actor.member)
            current = await _details(u.vault, history)
            if current is None:
                raise Conflict("this member's details were erased")
            details = ev.MemberDetails(**{**_fields(current), **update})
            sealed = await u.vault.seal(actor.member, details)
            await u.save(actor.member, history, domain.update_profile(member, actor, sealed, now()))

        await self._tx(work)

    async def erase(self, actor: Actor, member_id: str) -> None:
        """Erase a member's personal data for good: their key, and the keys of their exchanges' memos, go."""

        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            new = domain.erase(member, actor, now())
            if not new:
                return
            details = await _details(u.vault, history)
            await u.save(member_id, history, new)
            listings = await u.conn.fetch(
                "SELECT id FROM exchange.listings WHERE member = $1 AND status <> 'withdrawn'", member_id
            )
            for row in listings:
                lh = await u.load(row["id"])
                await u.save(row["id"], lh, [ev.ListingWithdrawn(at=now(), listing=row["id"])])
            others = [
                r["id"]
                for r in await u.conn.fetch(
                    """SELECT exchange AS id FROM exchange.exchange_parties WHERE member = $1
                       UNION SELECT id FROM exchange.payments WHERE payer = $1 OR payee = $1""",
                    member_id,
                )
            ]
            all_listings = [
                r["id"] for r in await u.conn.fetch("SELECT id FROM exchange.listings WHERE member = $1", member_id)
            ]
            await u.vault.shred([member_id, *others])
            await u.conn.execute("DELETE FROM exchange.sessions WHERE member = $1", member_id)
            if details is not None:  # the sign-in limiter keeps failed attempts by email address
                email_key = f"email:{details.email.strip().lower()}"
                await u.conn.execute("DELETE FROM exchange.login_failures WHERE key = $1", email_key)
            # What was sealed under the shredded keys reads as nothing from now on: project it so.
            for stream in [member_id, *others, *all_listings]:
                _, full = await load(u.conn, stream)
                await project(u.conn, u.vault, stream, full)

        await self._tx(work)

    async def _member_change(self, member_id: str, decide: Callable[[domain.Member], list[ev.AnyEvent]]) -> None:
        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            await u.save(member_id, history, decide(member))

        await self._tx(work)

    # ---- Listings ----

    async def publish(
        self,
        actor: Actor,
        *,
        kind: ev.Kind,
        category: ev.Category,
        text: ev.ListingText,
        shared: bool,
        expires: datetime | None,
    ) -> str:
        listing = new_id("lst")

        async def work(u: Unit) -> str:
            domain.need_approved(await self._member(u, actor.member), "list offers or requests")
            at = now()
            until = self._expiry(expires, at)
            sealed = await u.vault.seal(actor.member, text)
            published = ev.ListingPublished(
                at=at,
                listing=listing,
                member=actor.member,
                kind=kind,
                category=category,
                shared=shared,
                expires=until,
                text=sealed,
            )
            await u.save(listing, [], [published])
            return listing

        return await self._tx(work)

    async def edit_listing(
        self,
        actor: Actor,
        listing_id: str,
        *,
        category: ev.Category | None = None,
        text: dict[str, str],
        shared: bool | None = None,
        expires: datetime | None = None,
    ) -> None:
        async def work(u: Unit) -> None:
            history = await u.load(listing_id)
            listing = _exists(domain.fold_listing(listing_id, history), "listing", listing_id)
            current = await _listing_text(u.vault, history)
            if current is None:
                raise Conflict("this listing's text was erased")
            merged = ev.ListingText(**{**_fields(current), **text})
            last = _last_version(history)
            at = now()
            new = domain.edit_listing(
                listing,
                actor,
                category=category or listing.category,
                shared=last.shared if shared is None else shared,
                expires=self._expiry(expires, at) if expires is not None else last.expires,
                text=await u.vault.seal(listing.member, merged),
                at=at,
            )
            await u.save(listing_id, history, new)

        await self._tx(work)

    async def listing_status(self, actor: Actor, listing_id: str, action: str) -> None:
        decide = {
            "pause": domain.pause_listing,
            "resume": domain.resume_listing,
            "withdraw": domain.withdraw_listing,
        }[action]

        async def work(u: Unit) -> None:
            history = await u.load(listing_id)
            listing = _exists(domain.fold_listing(listing_id, history), "listing", listing_id)
            await u.save(listing_id, history, decide(listing, actor, now()))

        await self._tx(work)

    def _expiry(self, expires: datetime | None, at: datetime) -> datetime:
        if expires is None:
            return at + timedelta(days=self.listing_days)
        if expires.tzinfo is None:
            raise Invalid("give the expiry with a time zone, e.g. 2026-12-31T18:00:00Z")
        if expires <= at:
            raise Invalid("the expiry must be in the future")
        if expires > at + timedelta(days=MAX_LISTING_DAYS):
            raise Invalid(f"a listing can run for at most {MAX_LISTING_DAYS} days")
        return expires

    # ---- Exchanges ----

    async def propose(
        self,
        actor: Actor,
        *,
        listing: str | None = None,
        providers: list[str] | None = None,
        receivers: list[str] | None = None,
        note: str | None = None,
        category: ev.Category | None = None,
    ) -> str:
        """Propose on a listing (the proposer takes the other side), or a direct/group exchange."""
        exchange = new_id("ex")

        async def work(u: Unit) -> str:
            domain.need_approved(await self._member(u, actor.member), "propose exchanges")
            provs, recs, cat = list(providers or []), list(receivers or []), category or "other"
            if listing is not None:
                lh = await u.load(listing)
                found = _exists(domain.fold_listing(listing, lh), "listing", listing)
                if found.status != "active" or (found.expires is not None and found.expires <= now()):
                    raise Conflict(f"listing {listing} is not open for exchanges")
                if found.member == actor.member:
                    raise Invalid("you cannot propose an exchange on your own listing")
                if providers or receivers:
                    raise Invalid("on a listing, the parties are the listing's member and you")
                owner = found.member
                provs, recs = ([owner], [actor.member]) if found.kind == "offer" else ([actor.member], [owner])
                cat = found.category
            for party in {*provs, *recs} - {actor.member}:
                domain.need_approved(await self._member(u, party), "take part in exchanges")
            note_sealed = await u.vault.seal(exchange, ev.Note(text=note)) if note else None
            new = domain.propose(
                exchange,
                actor,
                providers=provs,
                receivers=recs,
                listing=listing,
                category=cat,
                note=note_sealed,
                at=now(),
            )
            await u.save(exchange, [], new)
            return exchange

        return await self._tx(work)

    async def act(self, actor: Actor, exchange_id: str, action: str, **args: Any) -> None:
        """accept, decline, cancel, record (minutes, memo), confirm, dispute (reason) or resolve (minutes)."""

        async def work(u: Unit) -> None:
            history = await u.load(exchange_id)
            ex = _exists(domain.fold_exchange(exchange_id, history), "exchange", exchange_id)
            at = now()
            if action == "accept":
                new = domain.accept(ex, actor, at)
            elif action == "decline":
                new = domain.decline(ex, actor, at)
            elif action == "cancel":
                new = domain.cancel(ex, actor, at)
            elif action == "record":
                text = args.get("memo") or f"exchange {exchange_id}"
                salt = os.urandom(16)
                sealed = await u.vault.seal(exchange_id, ev.Memo(text=text, salt=salt))
                new = domain.record(ex, actor, args["minutes"], sealed, memo_digest(salt, text), at)
            elif action == "confirm":
                new = domain.confirm(ex, actor, at)
            elif action == "dispute":
                reason = await u.vault.seal(exchange_id, ev.Note(text=args["reason"]))
                new = domain.dispute(ex, actor, reason, at)
            elif action == "resolve":
                new = domain.resolve(ex, actor, args["minutes"], at)
            else:
                raise Invalid(f"unknown action {action}")
            full = await u.save(exchange_id, history, new)
            after = domain.fold_exchange(exchange_id, full)
            assert after is not None
            await self._settle(u, after)

        await self._tx(work)

    async def _settle(self, u: Unit, ex: domain.Exchange) -> None:
        """Tell the ledger about every confirmed line (the outbox ignores a key it already has)."""
        for line in ex.live_lines:
            if line.state != "confirmed":
                continue
            accounts = await self._accounts(u, [line.receiver, line.provider])
            await u.enqueue(
                outbox.PostTransfer(
                    key=ex.key(line),
                    payer=accounts[line.receiver],
                    payee=accounts[line.provider],
                    minutes=line.minutes,
                    memo_digest=line.memo_digest,
                    exchange_ref=ex.id,
                    stream=ex.id,
                    line=line.n,
                )
            )

    # ---- Payments ----

    async def pay(self, actor: Actor, *, kind: ev.PaymentKind, payee: str, minutes: int, memo: str | None) -> str:
        payment = new_id("pay")

        async def work(u: Unit) -> str:
            if not actor.coordinator or kind != "grant":
                domain.need_approved(await self._member(u, actor.member), "send hours")
            text = memo or DEFAULT_MEMOS[kind]
            salt = os.urandom(16)
            sealed = await u.vault.seal(payment, ev.Memo(text=text, salt=salt))
            new = domain.pay(
                payment,
                actor,
                kind=kind,
                payee=payee,
                minutes=minutes,
                memo=sealed,
                digest=memo_digest(salt, text),
                at=now(),
            )
            made = new[0]
            assert isinstance(made, ev.PaymentMade)
            accounts = await self._accounts(u, [made.payer, made.payee])
            await u.save(payment, [], new)
            await u.enqueue(
                outbox.PostTransfer(
                    key=payment,
                    payer=accounts[made.payer],
                    payee=accounts[made.payee],
                    minutes=minutes,
                    memo_digest=made.memo_digest,
                    exchange_ref=payment,
                    stream=payment,
                )
            )
            return payment

        return await self._tx(work)

    # ---- The ledger's answers (called by the outbox worker, in its transaction) ----

    async def ensure_pot(self) -> None:
        """Ask the ledger for the community pot's account (idempotent: the key never changes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, outbox.OpenLedgerAccount(key=POT_KEY, kind="community"))
        self.wake()

    async def on_outcome(self, conn: Connection, command: outbox.OutboxCommand, outcome: outbox.AnyOutcome) -> None:
        u = Unit(conn, Vault(conn))
        at = now()
        if isinstance(command, outbox.OpenLedgerAccount):
            if not isinstance(outcome, outbox.Delivered):
                log.error("the ledger refused to open %s: %s", command.key, outcome)
                return
            result = outcome.result
            assert isinstance(result, OpenedAccount)
            account = result.account
            if command.member is None:
                history = await u.load("pot")
                if not history:
                    await u.save("pot", history, [ev.PotOpened(at=at, account=account)])
                return
            member = command.member
            history = await u.load(member)
            if domain.fold_member(member, history) is not None and not any(
                isinstance(e, ev.LedgerAccountOpened) for e in history
            ):
                await u.save(member, history, [ev.LedgerAccountOpened(at=at, member=member, account=account)])
            return
        assert isinstance(command, outbox.PostTransfer)
        stream = command.stream or command.key
        history = await u.load(stream)
        posted = outcome.result if isinstance(outcome, outbox.Delivered) else None
        assert posted is None or isinstance(posted, PostedTransfer)
        new: list[ev.AnyEvent]
        if stream.startswith("pay_"):
            if posted is not None:
                new = [ev.PaymentSettled(at=at, payment=stream, transfer=posted.id, index=posted.index)]
            else:
                new = [ev.PaymentRefused(at=at, payment=stream, reason=_reason(outcome))]
        else:
            ex = _exists(domain.fold_exchange(stream, history), "exchange", stream)
            line = next(line for line in ex.lines if ex.key(line) == command.key)
            if line.state != "confirmed":
                return  # an answer to a settled or superseded attempt
            if posted is not None:
                new = [ev.LineSettled(at=at, exchange=stream, line=line.n, transfer=posted.id, index=posted.index)]
            else:
                new = [ev.LineRefused(at=at, exchange=stream, line=line.n, reason=_reason(outcome))]
        await u.save(stream, history, new)

    # ---- helpers ----

    async def _member(self, u: Unit, member_id: str) -> domain.Member | None:
        version, history = await load(u.conn, member_id)
        del version
        return domain.fold_member(member_id, history)

    async def _accounts(self, u: Unit, parties: list[str]) -> dict[str, str]:
        """Ledger accounts of members (or of the pot); refuses while one is not open yet."""
        found: dict[str, str] = {}
        for party in parties:
            if party == ev.POT:
                account = await u.conn.fetchval("SELECT account FROM exchange.pot")
            else:
                member = await self._member(u, party)
                if member is None:
                    raise NotFound(f"member {party} does not exist", member=party)
                if member.status != "approved":
                    raise Conflict(f"member {party} is {member.status}", member=party)
                account = member.account
            if account is None:
                raise Conflict(f"the ledger account of {party} is still being opened; try again shortly")
            found[party] = account
        return found


def _exists(value: T | None, what: str, ident: str) -> T:
    if value is None:
        raise NotFound(f"{what} {ident} does not exist")
    return value


def _fields(struct: Any) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


def _last_version(history: list[ev.AnyEvent]) -> ev.ListingPublished | ev.ListingEdited:
    return next(e for e in reversed(history) if isinstance(e, ev.ListingPublished | ev.ListingEdited))


async def _details(vault: Vault, history: list[ev.AnyEvent]) -> ev.MemberDetails | None:
    last = next(e for e in reversed(history) if isinstance(e, ev.MemberApplied | ev.ProfileUpdated))
    return await vault.open(last.details, ev.MemberDetails)


async def _listing_text(vault: Vault, history: list[ev.AnyEvent]) -> ev.ListingText | None:
    return await vault.open(_last_version(history).text, ev.ListingText)


def _reason(outcome: outbox.AnyOutcome) -> str:
    problem = outcome.problem if isinstance(outcome, outbox.Refused) else {}
    return str(problem.get("detail") or problem.get("title") or "refused by the ledger")
