"""Hours: payments (send, donation, grant), a member's balance, statement and actions, and impact figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from services.exchange import commands as cmd
from services.exchange import events as ev
from services.exchange import store
from services.exchange.api.access import CommandsDep, LedgerDep, Me, PoolDep, coordinator, signed_in
from services.exchange.api.exchanges import member_exchanges, needs_action
from services.exchange.api.schema import Actions, Balance, ImpactRow, PaymentBody, Statement, StatementEntry
from services.exchange.domain.members import Actor
from services.exchange.service import Commands
from services.ledger.client import LedgerClient, LedgerError, LedgerRefused
from shared.errors import Conflict, DomainError, Invalid, NotFound, Unavailable


class PaymentController(Controller):
    path = "/api/payments"
    tags = ("payments",)

    @post("/", operation_id="makePayment", status_code=HTTP_201_CREATED)
    async def pay(self, data: JSONBody[PaymentBody], commands: CommandsDep, pool: PoolDep, me: Me) -> store.PaymentView:
        """Send hours to a member, donate to the community pot, or (coordinators) grant from it."""
        actor = signed_in(me)
        return await payment_view(pool, await make_payment(commands, actor, data), actor)

    @get("/{payment_id:str}", operation_id="getPayment")
    async def read(self, payment_id: FromPath[str], pool: PoolDep, me: Me) -> store.PaymentView:
        return await payment_view(pool, payment_id, signed_in(me))


class AccountController(Controller):
    """A member's hours: balance, statement with their own memos, and what waits for them."""

    path = "/api/me"
    tags = ("members",)

    @get("/balance", operation_id="myBalance")
    async def balance(self, ledger: LedgerDep, pool: PoolDep, me: Me) -> Balance:
        return await read_balance(ledger, await account_of(pool, signed_in(me)))

    @get("/statement", operation_id="myStatement")
    async def statement(
        self,
        ledger: LedgerDep,
        pool: PoolDep,
        me: Me,
        before: Annotated[int | None, QueryParameter(ge=0, le=2**62, required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> Statement:
        return await read_statement(ledger, pool, await account_of(pool, signed_in(me)), before=before, limit=limit)

    @get("/actions", operation_id="myActions")
    async def actions(self, pool: PoolDep, me: Me) -> Actions:
        return await my_actions(pool, signed_in(me).member)

    @get("/payments", operation_id="myPayments")
    async def payments(self, pool: PoolDep, me: Me) -> list[store.PaymentView]:
        return await member_payments(pool, signed_in(me).member, 100)


class CoordinatorController(Controller):
    path = "/api/impact"
    tags = ("coordinators",)

    @get("/", operation_id="impact")
    async def impact(
        self, pool: PoolDep, me: Me, weeks: Annotated[int, QueryParameter(ge=1, le=520)] = 12
    ) -> ImpactRow:
        """Per week and category: hours exchanged, exchanges completed, active members, members helped."""
        coordinator(me)
        return ImpactRow(weeks=weeks, rows=await impact(pool, weeks))


async def make_payment(commands: Commands, actor: Actor, body: PaymentBody) -> str:
    """Send hours to a member, donate to the pot, or grant from it; returns the payment id."""
    if body.kind == "donation" and body.to is not None:
        raise Invalid("a donation goes to the community pot: leave out 'to'")
    if body.kind != "donation" and body.to is None:
        raise Invalid("say who receives the hours in 'to'")
    command = cmd.MakePayment(kind=body.kind, payee=body.to or ev.POT, minutes=body.minutes, memo=body.memo)
    return await commands.pay(actor, command)


async def read_balance(ledger: LedgerClient, account: str) -> Balance:
    try:
        view = await ledger.account(account)
    except LedgerError as exc:
        raise _ledger_read_error(exc, account) from None
    return Balance(account=account, balance=view.balance, floor=view.floor, ceiling=view.ceiling)


def _ledger_read_error(exc: LedgerError, account: str) -> DomainError:
    """What a member is told when the ledger did not give their account's figures."""
    if isinstance(exc, LedgerRefused) and exc.status == 404:
        return NotFound(f"the ledger holds no account {account}", account=account)
    if isinstance(exc, LedgerRefused) and exc.status in (401, 403):
        # The member did nothing wrong: the exchange's own credentials for the ledger were refused.
        return Unavailable("the ledger refused the exchange's credentials; a coordinator must check its token")
    if isinstance(exc, LedgerRefused):
        return Conflict(f"the ledger refused to read account {account}: {exc}", account=account)
    return Unavailable(f"the ledger cannot be reached right now; try again later ({exc})")


async def read_statement(
    ledger: LedgerClient, pool: asyncpg.Pool, account: str, *, before: int | None, limit: int
) -> Statement:
    """The account's ledger lines, newest first, with the member's own memos where the exchange holds them."""
    try:
        page = await ledger.statement(account, before=before, limit=limit)
    except LedgerError as exc:
        raise _ledger_read_error(exc, account) from None
    refs = [line.exchange_ref for line in page.lines if line.exchange_ref]
    async with pool.acquire() as conn:
        memos = await store.memos(conn, refs, [line.transfer for line in page.lines])
    return Statement(
        account=account,
        entries=[
            StatementEntry(
                index=line.index,
                at=line.at,
                delta=line.delta,
                balance=line.balance,
                transfer=line.transfer,
                counterparty=line.counterparty,
                exchange_ref=line.exchange_ref,
                memo=memos.get(line.transfer) or memos.get(line.exchange_ref or ""),
            )
            for line in page.lines
        ],
        next_before=page.next_before,
    )


async def payment_view(pool: asyncpg.Pool, payment_id: str, actor: Actor) -> store.PaymentView:
    async with pool.acquire() as conn:
        view = await store.payment(conn, payment_id)
    if view is None or (
        actor.member not in (view.payer, view.payee, view.made_by) and actor.role not in ("coordinator", "auditor")
    ):
        raise NotFound(f"payment {payment_id} does not exist")
    return view


async def account_of(pool: asyncpg.Pool, actor: Actor) -> str:
    async with pool.acquire() as conn:
        view = await store.member(conn, actor.member)
    if view is None or view.account is None:
        raise Conflict("you have no ledger account yet: it opens when a coordinator approves you")
    return view.account


async def my_actions(pool: asyncpg.Pool, member: str, limit: int = 200) -> Actions:
    """What waits for the member in their open exchanges."""
    return needs_action(member, await member_exchanges(pool, member, open_only=True, limit=limit))


async def member_payments(pool: asyncpg.Pool, member: str, limit: int) -> list[store.PaymentView]:
    async with pool.acquire() as conn:
        return await store.member_payments(conn, member, limit)


async def impact(pool: asyncpg.Pool, weeks: int) -> list[store.ImpactRow]:
    """Per week and category, over the last ``weeks`` weeks (and today)."""
    until = datetime.now(UTC) + timedelta(days=1)
    async with pool.acquire() as conn:
        return await store.impact(conn, until - timedelta(weeks=weeks), until)
