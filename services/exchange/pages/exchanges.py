"""An exchange's page and the actions its forms post; sending hours to a member or the pot."""

from __future__ import annotations

from litestar import get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from services.exchange import commands as cmd
from services.exchange import forms
from services.exchange.actions import allowed_actions
from services.exchange.api import exchanges, payments, schema
from services.exchange.forms import Visit, Visitor, duration, optional, read_form
from services.exchange.service import reads
from shared.errors import DomainError, NotFound

EXCHANGE_ACTIONS = ("accept", "decline", "cancel", "record", "confirm", "dispute", "resolve")


async def _exchange(visit: Visit, exchange_id: str, *, status: int = 200, error: str | None = None) -> Template:
    actor = visit.actor()
    ex = await exchanges.exchange_view(visit.pool, exchange_id, actor)
    return visit.page(
        "exchange.html",
        status=status,
        error=error,
        ex=ex,
        can=allowed_actions(ex, actor),
        names=await reads.party_names(visit.pool, [ex]),
        titles=await reads.listing_titles(visit.pool, [ex]),
    )


@get("/exchanges/{exchange_id:str}", operation_id="exchangePage", include_in_schema=False)
async def exchange_page(visit: Visitor, exchange_id: FromPath[str]) -> Template:
    return await _exchange(visit, exchange_id)


@post("/exchanges/{exchange_id:str}/{action:str}", operation_id="exchangeActionForm", include_in_schema=False)
async def exchange_action(visit: Visitor, exchange_id: FromPath[str], action: FromPath[str]) -> Template | Redirect:
    """Accept, decline, cancel, record time, confirm, dispute or (coordinators) resolve."""
    actor = visit.actor()
    if action not in EXCHANGE_ACTIONS:
        raise NotFound(f"no such action {action!r}")
    f = visit.form
    try:
        await visit.commands.act(actor, _exchange_command(visit, exchange_id, action))
    except DomainError as exc:
        return await _exchange(visit, exchange_id, status=exc.status, error=exc.detail)
    return visit.redirect(forms.safe_next(f.get("next"), f"/exchanges/{exchange_id}"), action)


def _exchange_command(visit: Visit, exchange_id: str, action: str) -> cmd.ExchangeCommand:
    """The command an exchange page's form asks for (``action`` is one of EXCHANGE_ACTIONS)."""
    f = visit.form
    match action:
        case "accept":
            return cmd.AcceptExchange(exchange=exchange_id)
        case "decline":
            return cmd.DeclineExchange(exchange=exchange_id)
        case "cancel":
            return cmd.CancelExchange(exchange=exchange_id)
        case "record":
            body = read_form(schema.RecordBody, {"minutes": duration(f), "memo": optional(f, "memo")})
            return cmd.RecordTime(exchange=exchange_id, minutes=body.minutes, memo=body.memo)
        case "confirm":
            return cmd.ConfirmExchange(exchange=exchange_id)
        case "dispute":
            reason = read_form(schema.DisputeBody, {"reason": f.get("reason", "")}).reason
            return cmd.DisputeExchange(exchange=exchange_id, reason=reason)
        case _:
            visit.coordinator()
            minutes = read_form(schema.ResolveBody, {"minutes": duration(f)}).minutes
            return cmd.ResolveDispute(exchange=exchange_id, minutes=minutes)


async def _send(visit: Visit, *, to: str = "", status: int = 200, error: str | None = None) -> Template:
    visit.actor()
    recipient = await reads.recipient_name(visit.pool, to) if to else None
    return visit.page("send.html", status=status, error=error, to=to, recipient=recipient)


@get("/send", operation_id="sendPage", include_in_schema=False)
async def send_form(visit: Visitor, to: FromQuery[str] = "") -> Template:
    return await _send(visit, to=to[:40])


@post("/send", operation_id="sendForm", include_in_schema=False)
async def send(visit: Visitor) -> Template | Redirect:
    """Send hours to a member, or donate them to the community pot."""
    actor = visit.actor()
    f = visit.form
    kind = "donation" if f.get("kind") == "donation" else "send"
    try:
        data = {"kind": kind, "minutes": duration(f), "memo": optional(f, "memo")}
        if kind == "send":
            data["to"] = f.get("to", "").strip()
        await payments.make_payment(visit.commands, actor, read_form(schema.PaymentBody, data))
    except DomainError as exc:
        return await _send(visit, to=f.get("to", "")[:40], status=exc.status, error=exc.detail)
    return visit.redirect("/me", "donated" if kind == "donation" else "sent")
