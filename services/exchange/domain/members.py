"""Members: who acts, a membership's course (applied, approved or rejected, roles, profile, erased), and the
checks the other aggregates make on who acts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.exchange import events as ev
from shared.errors import Conflict, Forbidden, NotFound

MemberStatus = Literal["pending", "approved", "rejected", "erased"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a member id and their role (coordinators may act for the network)."""

    member: str
    role: str

    @property
    def coordinator(self) -> bool:
        return self.role == "coordinator"


def need_coordinator(actor: Actor) -> None:
    """Only a coordinator may do this."""
    if not actor.coordinator:
        raise Forbidden("this needs a coordinator")


@dataclass(slots=True)
class Member:
    id: str
    status: MemberStatus = "pending"
    role: str = "member"
    account: str | None = None


def fold_member(member_id: str, history: list[ev.AnyEvent]) -> Member | None:
    if not history:
        return None
    member = Member(member_id)
    for event in history:
        if isinstance(event, ev.MemberApplied):
            member.role = event.role
            member.status = "approved" if event.invitation else "pending"
        elif isinstance(event, ev.MemberApproved):
            member.status = "approved"
        elif isinstance(event, ev.MemberRejected):
            member.status = "rejected"
        elif isinstance(event, ev.LedgerAccountOpened):
            member.account = event.account
        elif isinstance(event, ev.RoleChanged):
            member.role = event.role
        elif isinstance(event, ev.MemberErased):
            member.status = "erased"
    return member


def approve(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    need_coordinator(actor)
    if member.status == "approved":
        return []  # approving twice changes nothing
    if member.status != "pending":
        raise Conflict(f"member {member.id} is {member.status} and cannot be approved", status=member.status)
    return [ev.MemberApproved(at=at, member=member.id, by=actor.member)]


def reject(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    need_coordinator(actor)
    if member.status != "pending":
        raise Conflict(f"member {member.id} is {member.status}; only an application can be rejected")
    return [ev.MemberRejected(at=at, member=member.id, by=actor.member)]


def change_role(member: Member, actor: Actor, role: ev.Role, at: datetime) -> list[ev.AnyEvent]:
    need_coordinator(actor)
    _need_active(member)
    if member.role == role:
        return []
    return [ev.RoleChanged(at=at, member=member.id, role=role, by=actor.member)]


def update_profile(member: Member, actor: Actor, details: ev.Sealed, at: datetime) -> list[ev.AnyEvent]:
    if actor.member != member.id:
        raise Forbidden("only the member may edit their profile")
    if member.status in ("erased", "rejected"):
        raise Conflict(f"member {member.id} is {member.status}")
    return [ev.ProfileUpdated(at=at, member=member.id, details=details)]


def erase(member: Member, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    if actor.member != member.id and not actor.coordinator:
        raise Forbidden("only the member or a coordinator may erase a member's personal data")
    if member.status == "erased":
        return []
    return [ev.MemberErased(at=at, member=member.id, by=actor.member)]


def need_approved(member: Member | None, what: str = "do this") -> Member:
    """Only approved members with an open ledger account may list, propose or pay."""
    if member is None:
        raise NotFound("no such member")
    if member.status != "approved":
        raise Forbidden(f"member {member.id} is {member.status}: only approved members can {what}")
    return member


def _need_active(member: Member) -> None:
    if member.status in ("erased", "rejected"):
        raise Conflict(f"member {member.id} is {member.status}")
