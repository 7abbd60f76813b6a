"""The exchange's command side: each command reads streams and read models, decides, seals, and then appends,
projects and enqueues what the ledger must be told in one atomic statement (see ``unit.py``), all or nothing.

Optimistic concurrency: two commands on one stream race to the next version; the loser retries from a fresh
read, so a decision is always made on the latest state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import asyncpg

from services.exchange import domain, outbox
from services.exchange import events as ev
from services.exchange.auth import Credentials, Session, principal_of
from services.exchange.commands import (
    AcceptExchange,
    ApplyToJoin,
    ApproveMember,
    CancelExchange,
    ChangeRole,
    ConfirmExchange,
    DeclineExchange,
    DisputeExchange,
    EditListing,
    EraseMember,
    ExchangeCommand,
    Invite,
    JoinByInvitation,
    ListingStatusCommand,
    MakePayment,
    PauseListing,
    ProposeExchange,
    PublishListing,
    RecordTime,
    RejectMember,
    ResolveDispute,
    ResumeListing,
    UpdateProfile,
    WithdrawListing,
)
from services.exchange.domain import Actor
from services.exchange.eventstore import Loaded, StreamConflict, load
from services.exchange.ledger_client import OpenedAccount, PostedTransfer
from services.exchange.projections import project
from services.exchange.store import ExchangeView, Q, unzip
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from services.exchange.writes import Write
from shared.db import Connection
from shared.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

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


class Commands:
    """Every state change the exchange makes. Callers pass the acting member (or, to exchanges, the credentials
    they came with, looked up in the same round trip as the exchange); errors are DomainErrors."""

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

    # ---- Members ----

    async def apply(self, command: ApplyToJoin) -> str:
        member = new_id("mem")
        details = command.details

        async def work(u: Unit) -> str:
            u.new_stream(member)
            sealed = await u.vault.seal(member, details)
            await u.save(member, [], [ev.MemberApplied(at=now(), member=member, details=sealed)])
            return member

        return await self._tx(work)

    async def invite(self, actor: Actor, command: Invite) -> tuple[str, str]:
        """A coordinator's invitation: returns its id and the secret token for the join link."""
        if not actor.coordinator:
            raise Forbidden("only coordinators invite")
        invitation, token = new_id("inv"), "join_" + secrets.token_urlsafe(24)
        created = ev.InvitationCreated(
            at=now(),
            invitation=invitation,
            role=command.role,
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            expires=now() + timedelta(days=self.invitation_days),
            by=actor.member,
        )

        async def work(u: Unit) -> tuple[str, str]:
            await u.save(invitation, [], [created])
            return invitation, token

        return await self._tx(work)

    async def join(self, command: JoinByInvitation) -> str:
        """Join by invitation: the member is approved at once and their ledger account is opened."""
        member = new_id("mem")
        details = command.details
        digest = hashlib.sha256(command.token.encode()).hexdigest()

        async def work(u: Unit) -> str:
            row = await u.conn.fetchrow(Q["invitation_by_token"], digest)
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
            u.new_stream(member)
            sealed = await u.vault.seal(member, details)
            await u.save(row["id"], history, [ev.InvitationUsed(at=at, invitation=row["id"], member=member)])
            applied = ev.MemberApplied(at=at, member=member, role=created.role, details=sealed, invitation=row["id"])
            await u.save(member, [], [applied])
            await u.enqueue(outbox.OpenLedgerAccount(key=account_key(member), kind="member", member=member))
            return member

        return await self._tx(work)

    async def approve(self, actor: Actor, command: ApproveMember) -> None:
        member_id = command.member

        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            new = domain.approve(member, actor, now())
            await u.save(member_id, history, new)
            if new:
                await u.enqueue(outbox.OpenLedgerAccount(key=account_key(member_id), kind="member", member=member_id))

        await self._tx(work)

    async def reject(self, actor: Actor, command: RejectMember) -> None:
        await self._member_change(command.member, lambda m: domain.reject(m, actor, now()))

    async def change_role(self, actor: Actor, command: ChangeRole) -> None:
        await self._member_change(command.member, lambda m: domain.change_role(m, actor, command.role, now()))

    async def update_profile(self, actor: Actor, command: UpdateProfile) -> None:
        """Change some of a member's profile fields (name, skills, area, bio); the rest stay as they were."""
        update = {k: v for k, v in _fields(command).items() if v is not None}

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

    async def erase(self, actor: Actor, command: EraseMember) -> None:
        """Erase a member's personal data for good: their key, and the keys of their exchanges' memos, go."""
        member_id = command.member

        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            new = domain.erase(member, actor, now())
            if not new:
                return
            details = await _details(u.vault, history)
            await u.save(member_id, history, new)
            await u.flush()
            listings = await u.conn.fetch(Q["live_listings_of"], member_id)
            for row in listings:
                lh = await u.load(row["id"])
                await u.save(row["id"], lh, [ev.ListingWithdrawn(at=now(), listing=row["id"])])
            await u.flush()
            others = [r["id"] for r in await u.conn.fetch(Q["memo_subjects_of"], member_id)]
            all_listings = [r["id"] for r in await u.conn.fetch(Q["listings_of"], member_id)]
            await u.vault.shred([member_id, *others])
            await u.conn.execute(Q["delete_sessions_of"], member_id)
            if details is not None:  # the sign-in limiter keeps failed attempts by email address
                email_key = f"email:{details.email.strip().lower()}"
                await u.conn.execute(Q["delete_failures"], email_key)
            # What was sealed under the shredded keys reads as nothing from now on: project it so.
            for stream in [member_id, *others, *all_listings]:
                _, full = await load(u.conn, stream)
                await project(u.conn, u.vault, stream, full)

        await self._tx(work, transaction=True)

    async def _member_change(self, member_id: str, decide: Callable[[domain.Member], list[ev.AnyEvent]]) -> None:
        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = _exists(domain.fold_member(member_id, history), "member", member_id)
            await u.save(member_id, history, decide(member))

        await self._tx(work)

    # ---- Listings ----

    async def publish(self, actor: Actor, command: PublishListing) -> str:
        listing = new_id("lst")

        async def work(u: Unit) -> str:
            domain.need_approved((await _members(u, [actor.member])).get(actor.member), "list offers or requests")
            at = now()
            until = self._expiry(command.expires, at)
            sealed = await u.vault.seal(actor.member, command.text)
            published = ev.ListingPublished(
                at=at,
                listing=listing,
                member=actor.member,
                kind=command.kind,
                category=command.category,
                shared=command.shared,
                expires=until,
                text=sealed,
            )
            await u.save(listing, [], [published])
            return listing

        return await self._tx(work)

    async def edit_listing(self, actor: Actor, command: EditListing) -> None:
        listing_id, category, shared, expires = command.listing, command.category, command.shared, command.expires
        text_fields = ("title", "description", "area", "availability")
        text = {k: getattr(command, k) for k in text_fields if getattr(command, k) is not None}

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

    async def listing_status(self, actor: Actor, command: ListingStatusCommand) -> None:
        """Pause, resume or withdraw a listing."""
        listing_id = command.listing

        async def work(u: Unit) -> None:
            history = await u.load(listing_id)
            listing = _exists(domain.fold_listing(listing_id, history), "listing", listing_id)
            at = now()
            match command:
                case PauseListing():
                    new = domain.pause_listing(listing, actor, at)
                case ResumeListing():
                    new = domain.resume_listing(listing, actor, at)
                case WithdrawListing():
                    new = domain.withdraw_listing(listing, actor, at)
            await u.save(listing_id, history, new)

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

    async def propose(self, who: Actor | Credentials, command: ProposeExchange) -> ExchangeView:
        """Propose on a listing (the proposer takes the other side), or a direct/group exchange.

        ``who``: the acting member, or the credentials they came with (looked up with what the proposal reads)."""
        exchange = new_id("ex")
        listing, providers, receivers = command.listing, command.providers, command.receivers
        note, category = command.note, command.category
        named = [*(providers or []), *(receivers or [])]

        async def work(u: Unit) -> ExchangeView:
            u.new_stream(exchange)
            # The listing, every member who would take part and the caller's session, in one round trip.
            known = [who.member] if isinstance(who, Actor) else []
            rows = await u.conn.fetch(Q["proposal"], listing, [*known, *named], _token(who))
            actor = _actor(who, rows[0])
            members = {r["id"]: _member_of(r) for r in rows if r["id"] is not None}
            domain.need_approved(members.get(actor.member), "propose exchanges")
            provs, recs, cat = list(providers or []), list(receivers or []), category or "other"
            if listing is not None:
                found = rows[0]
                if found["owner"] is None:
                    raise NotFound(f"listing {listing} does not exist")
                if found["listing_status"] != "active" or found["expires"] <= now():
                    raise Conflict(f"listing {listing} is not open for exchanges")
                if found["owner"] == actor.member:
                    raise Invalid("you cannot propose an exchange on your own listing")
                if providers or receivers:
                    raise Invalid("on a listing, the parties are the listing's member and you")
                owner = found["owner"]
                provs, recs = ([owner], [actor.member]) if found["kind"] == "offer" else ([actor.member], [owner])
                cat = found["category"]
            for party in {*provs, *recs} - {actor.member}:
                domain.need_approved(members.get(party), "take part in exchanges")
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
            await u.flush()
            return u.views[exchange]

        return await self._tx(work)

    async def act(self, who: Actor | Credentials, command: ExchangeCommand) -> ExchangeView:
        """Accept, decline, cancel, record time, confirm, dispute or resolve: ``command`` says which.

        ``who``: the acting member, or the credentials they came with (looked up with the exchange). Returns the
        exchange as this command left it (as its read model then reads)."""
        exchange_id = command.exchange

        async def work(u: Unit) -> ExchangeView:
            # Confirming and resolving settle lines: the parties' ledger accounts come with the stream.
            settles = isinstance(command, ConfirmExchange | ResolveDispute)
            actor, members = await _read_exchange(u, exchange_id, who, parties=settles)
            history = await u.load(exchange_id)
            ex = _exists(domain.fold_exchange(exchange_id, history), "exchange", exchange_id)
            at = now()
            match command:
                case AcceptExchange():
                    new = domain.accept(ex, actor, at)
                case DeclineExchange():
                    new = domain.decline(ex, actor, at)
                case CancelExchange():
                    new = domain.cancel(ex, actor, at)
                case RecordTime(minutes=minutes, memo=memo):
                    text = memo or f"exchange {exchange_id}"
                    salt = os.urandom(16)
                    sealed = await u.vault.seal(exchange_id, ev.Memo(text=text, salt=salt))
                    new = domain.record(ex, actor, minutes, sealed, memo_digest(salt, text), at)
                case ConfirmExchange():
                    new = domain.confirm(ex, actor, at)
                case DisputeExchange(reason=reason):
                    new = domain.dispute(ex, actor, await u.vault.seal(exchange_id, ev.Note(text=reason)), at)
                case ResolveDispute(minutes=minutes):
                    new = domain.resolve(ex, actor, minutes, at)
            full = await u.save(exchange_id, history, new)
            after = domain.fold_exchange(exchange_id, full)
            assert after is not None
            await self._settle(u, after, members)
            await u.flush()
            return u.views[exchange_id]

        return await self._tx(work)

    async def _settle(self, u: Unit, ex: domain.Exchange, members: dict[str, domain.Member]) -> None:
        """Tell the ledger about every confirmed line (the outbox ignores a key it already has)."""
        confirmed = [line for line in ex.live_lines if line.state == "confirmed"]
        if not confirmed:
            return
        parties = [p for line in confirmed for p in (line.receiver, line.provider)]
        accounts = await self._accounts(u, parties, members)
        for line in confirmed:
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

    async def pay(self, actor: Actor, command: MakePayment) -> str:
        payment = new_id("pay")
        kind, payee, minutes, memo = command.kind, command.payee, command.minutes, command.memo

        async def work(u: Unit) -> str:
            u.new_stream(payment)
            members = await _members(u, [actor.member, payee])
            if not actor.coordinator or kind != "grant":
                domain.need_approved(members.get(actor.member), "send hours")
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
            accounts = await self._accounts(u, [made.payer, made.payee], members)
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
        """Record the ledger's answer to ``command`` as the event it means (in the outbox's transaction)."""
        u = Unit(conn, Vault(conn))
        await self._record_outcome(u, command, outcome)
        await u.flush()

    async def on_outcomes(
        self, conn: Connection, answers: list[tuple[outbox.OutboxCommand, outbox.AnyOutcome]], done: Write
    ) -> None:
        """``on_outcome`` for many answers at once: their streams read in one round trip, and their events, read
        models and the outbox's ``done`` marks written in one statement."""
        u = Unit(conn, Vault(conn))
        await u.preload(sorted({_stream_of(command) for command, _ in answers}))
        for command, outcome in answers:
            await self._record_outcome(u, command, outcome)
        await u.flush([done])

    async def _record_outcome(self, u: Unit, command: outbox.OutboxCommand, outcome: outbox.AnyOutcome) -> None:
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

    async def _accounts(
        self, u: Unit, parties: list[str], members: dict[str, domain.Member] | None = None
    ) -> dict[str, str]:
        """Ledger accounts of members (or of the pot); refuses while one is not open yet."""
        known = dict(members or {})
        missing = [p for p in parties if p != ev.POT and p not in known]
        if missing:
            known.update(await _members(u, missing))
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


async def _read_exchange(
    u: Unit, exchange_id: str, who: Actor | Credentials, *, parties: bool
) -> tuple[Actor, dict[str, domain.Member]]:
    """Read the exchange's stream for ``u.load``, the caller's session and (``parties``) the parties as ``_members``
    would, in one round trip: the acting member, and those parties."""
    query = Q["exchange_for_settling" if parties else "exchange_for_command"]
    rows = await u.conn.fetch(query, exchange_id, _token(who))
    first = rows[0]
    actor = _actor(who, first)
    events = [r for r in rows if r["version"] is not None]
    history = [ev.decoder.decode(r["data"]) for r in events]
    u.loaded_with(exchange_id, Loaded(events[-1]["version"] if events else 0, history, first["key"]))
    if not parties or first["ids"] is None:
        return actor, {}
    found = unzip(first, {"id": "ids", "status": "statuses", "role": "roles", "account": "accounts"})
    return actor, {p["id"]: domain.Member(**p) for p in found}


def _token(who: Actor | Credentials) -> str | None:
    """The session token to look up with a command's first read, if the caller came with one."""
    return who.token_sha256 if isinstance(who, Credentials) else None


def _actor(who: Actor | Credentials, row: Any) -> Actor:
    """The acting member: given, or the one whose session ``row`` holds (refused as ``Gate.resolve`` would)."""
    if isinstance(who, Actor):
        return who
    principal = principal_of(who, Session.of(row, "session_"))
    if principal is None:
        raise Unauthorized("sign in first")
    return principal.actor


async def _members(u: Unit, ids: list[str]) -> dict[str, domain.Member]:
    """Members as commands check them (status, role, ledger account), from the read model in one round trip."""
    return {r["id"]: _member_of(r) for r in await u.conn.fetch(Q["member_states"], ids)}


def _member_of(row: Any) -> domain.Member:
    return domain.Member(
        id=row["id"], status=cast("domain.MemberStatus", row["status"]), role=row["role"], account=row["account"]
    )


def _stream_of(command: outbox.OutboxCommand) -> str:
    """The stream the ledger's answer to ``command`` is recorded in."""
    if isinstance(command, outbox.OpenLedgerAccount):
        return command.member or "pot"
    return command.stream or command.key


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
