"""The coordinators' page: applications to decide, disputes, impact, the pot; invitations and grants."""

from __future__ import annotations

from litestar import get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from services.exchange import commands as cmd
from services.exchange.api import exchanges, members, payments, schema
from services.exchange.forms import Visit, Visitor, duration, optional, read_form
from services.exchange.service import reads
from shared.errors import DomainError, NotFound

IMPACT_WEEKS = 12


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
