"""A member's own page: balance, statement, what waits for them, listings; their profile and erasure."""

from __future__ import annotations

from litestar import get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from services.exchange import commands as cmd
from services.exchange import forms
from services.exchange.api import access, exchanges, listings, payments, schema
from services.exchange.forms import Visit, Visitor, read_form
from services.exchange.service import reads
from shared.errors import DomainError, Invalid, NotFound

STATEMENT_PAGE = 20


@get("/me", operation_id="myPage", include_in_schema=False)
async def me_page(visit: Visitor, before: FromQuery[int | None] = None) -> Template:
    return await my_page(visit, before=before)


async def my_page(visit: Visit, *, before: int | None = None, status: int = 200, error: str | None = None) -> Template:
    """Balance, statement, what waits for me, my listings, my profile."""
    actor = visit.actor()
    member = await reads.member(visit.pool, actor.member)
    # The same reads as the API's (GET /api/listings/mine, GET /api/exchanges?open=true).
    own = [v for v in await listings.member_listings(visit.pool, actor.member) if v.status != "withdrawn"]
    open_exchanges = await exchanges.member_exchanges(visit.pool, actor.member, open_only=True, limit=100)
    if member is None:
        raise NotFound("this page is for members; the network's coordinator token has no member page")
    balance, statement, ledger_problem = None, None, None
    if member.account is not None:
        try:
            balance = await payments.read_balance(visit.ledger, member.account)
            statement = await payments.read_statement(
                visit.ledger, visit.pool, member.account, before=before, limit=STATEMENT_PAGE
            )
        except DomainError as exc:
            ledger_problem = exc.detail
    accounts = sorted({e.counterparty for e in statement.entries}) if statement else []
    return visit.page(
        "me.html",
        status=status,
        error=error,
        member=member,
        balance=balance,
        statement=statement,
        counterparties=await reads.counterparties(visit.pool, accounts),
        ledger_problem=ledger_problem,
        actions=exchanges.needs_action(actor.member, open_exchanges),
        names=await reads.party_names(visit.pool, open_exchanges),
        titles=await reads.listing_titles(visit.pool, open_exchanges),
        listings=own,
    )


@post("/me/profile", operation_id="profileForm", include_in_schema=False)
async def profile(visit: Visitor) -> Template | Redirect:
    actor = visit.actor()
    f = visit.form
    try:
        body = read_form(
            schema.ProfileBody,
            {
                "name": f.get("name", "").strip(),
                "skills": forms.skills(f.get("skills", "")),
                "area": f.get("area", "").strip(),
                "bio": f.get("bio", ""),
            },
        )
        await visit.commands.update_profile(
            actor, cmd.UpdateProfile(name=body.name, skills=body.skills, area=body.area, bio=body.bio)
        )
    except DomainError as exc:
        return await my_page(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/me", "profile")


@post("/me/erase", operation_id="eraseForm", include_in_schema=False)
async def erase(visit: Visitor) -> Template | Redirect:
    """Erase my personal data for good (the ledger keeps only the pseudonymous account); signs me out."""
    actor = visit.actor()
    try:
        if visit.form.get("confirm") != "yes":
            raise Invalid("tick the box to confirm that you want your personal data erased for good")
        await visit.commands.erase(actor, cmd.EraseMember(member=actor.member))
    except DomainError as exc:
        return await my_page(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/", "erased", cookies=[access.expired_cookie()])
