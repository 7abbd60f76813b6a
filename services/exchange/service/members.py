"""Members and access: applications, invitations, joining, approval, roles, profiles and erasure."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta

from services.exchange import events as ev
from services.exchange import outbox
from services.exchange.auth import email_limiter_key
from services.exchange.commands import (
    ApplyToJoin,
    ApproveMember,
    ChangeRole,
    EraseMember,
    Invite,
    JoinByInvitation,
    RejectMember,
    UpdateProfile,
)
from services.exchange.domain import members
from services.exchange.domain.members import Actor
from services.exchange.eventstore import load
from services.exchange.projections import project
from services.exchange.service.core import Core, account_key, details_of, exists, fields_of, new_id, now
from services.exchange.store import Q
from services.exchange.unit import Unit
from shared.errors import Conflict, Forbidden, NotFound


class MemberCommands(Core):
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
            member = exists(members.fold_member(member_id, history), "member", member_id)
            new = members.approve(member, actor, now())
            await u.save(member_id, history, new)
            if new:
                await u.enqueue(outbox.OpenLedgerAccount(key=account_key(member_id), kind="member", member=member_id))

        await self._tx(work)

    async def reject(self, actor: Actor, command: RejectMember) -> None:
        await self._member_change(command.member, lambda m: members.reject(m, actor, now()))

    async def change_role(self, actor: Actor, command: ChangeRole) -> None:
        await self._member_change(command.member, lambda m: members.change_role(m, actor, command.role, now()))

    async def update_profile(self, actor: Actor, command: UpdateProfile) -> None:
        """Change some of a member's profile fields (name, skills, area, bio); the rest stay as they were."""
        update = {k: v for k, v in fields_of(command).items() if v is not None}

        async def work(u: Unit) -> None:
            history = await u.load(actor.member)
            member = exists(members.fold_member(actor.member, history), "member", actor.member)
            current = await details_of(u.vault, history)
            if current is None:
                raise Conflict("this member's details were erased")
            details = ev.MemberDetails(**{**fields_of(current), **update})
            sealed = await u.vault.seal(actor.member, details)
            await u.save(actor.member, history, members.update_profile(member, actor, sealed, now()))

        await self._tx(work)

    async def erase(self, actor: Actor, command: EraseMember) -> None:
        """Erase a member's personal data for good: their key, and the keys of their exchanges' memos, go."""
        member_id = command.member

        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = exists(members.fold_member(member_id, history), "member", member_id)
            new = members.erase(member, actor, now())
            if not new:
                return
            details = await details_of(u.vault, history)
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
                email_key = email_limiter_key(self.limiter_secret, details.email)
                await u.conn.execute(Q["delete_failures"], email_key)
            # What was sealed under the shredded keys reads as nothing from now on: project it so.
            for stream in [member_id, *others, *all_listings]:
                _, full = await load(u.conn, stream)
                await project(u.conn, u.vault, stream, full)

        await self._tx(work, transaction=True)
        # Outside the transaction (VACUUM cannot run in one); it locks these small tables for a moment.
        async with self.pool.acquire() as conn:
            await conn.execute(Q["rewrite_after_erasure"])

    async def _member_change(self, member_id: str, decide: Callable[[members.Member], list[ev.AnyEvent]]) -> None:
        async def work(u: Unit) -> None:
            history = await u.load(member_id)
            member = exists(members.fold_member(member_id, history), "member", member_id)
            await u.save(member_id, history, decide(member))

        await self._tx(work)
