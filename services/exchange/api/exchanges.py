"""Exchanges: proposed, answered, time recorded, confirmed or disputed, and resolved."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from services.exchange import auth, store
from services.exchange import commands as cmd
from services.exchange.api.access import CommandsDep, GateDep, Me, PoolDep, caller, coordinator, signed_in
from services.exchange.api.schema import Actions, DisputeBody, ProposalBody, RecordBody, ResolveBody
from services.exchange.domain.members import Actor
from services.exchange.service import Commands
from shared.errors import NotFound
from shared.web import AnyRequest


class ExchangeController(Controller):
    path = "/api/exchanges"
    tags = ("exchanges",)

    @post("/", operation_id="proposeExchange", status_code=HTTP_201_CREATED)
    async def propose(
        self, request: AnyRequest, data: JSONBody[ProposalBody], commands: CommandsDep, gate: GateDep
    ) -> store.ExchangeView:
        who = caller(request, gate)
        proposal = cmd.ProposeExchange(
            listing=data.listing,
            providers=data.providers,
            receivers=data.receivers,
            note=data.note,
            category=data.category,
        )
        return await commands.propose(who, proposal)

    @get("/", operation_id="myExchanges")
    async def mine(
        self,
        pool: PoolDep,
        me: Me,
        open: Annotated[bool, QueryParameter(required=False)] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> list[store.ExchangeView]:
        return await member_exchanges(pool, signed_in(me).member, open_only=open, limit=limit)

    @get("/disputes", operation_id="disputedExchanges")
    async def disputes(self, pool: PoolDep, me: Me) -> list[store.ExchangeView]:
        coordinator(me)
        return await disputed_exchanges(pool, 200)

    @get("/{exchange_id:str}", operation_id="getExchange")
    async def read(self, exchange_id: FromPath[str], pool: PoolDep, me: Me) -> store.ExchangeView:
        return await exchange_view(pool, exchange_id, signed_in(me))

    @post("/{exchange_id:str}/accept", operation_id="acceptExchange", status_code=HTTP_200_OK)
    async def accept(
        self, exchange_id: FromPath[str], request: AnyRequest, commands: CommandsDep, gate: GateDep
    ) -> store.ExchangeView:
        return await _act(commands, caller(request, gate), cmd.AcceptExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/decline", operation_id="declineExchange", status_code=HTTP_200_OK)
    async def decline(
        self, exchange_id: FromPath[str], request: AnyRequest, commands: CommandsDep, gate: GateDep
    ) -> store.ExchangeView:
        return await _act(commands, caller(request, gate), cmd.DeclineExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/cancel", operation_id="cancelExchange", status_code=HTTP_200_OK)
    async def cancel(
        self, exchange_id: FromPath[str], request: AnyRequest, commands: CommandsDep, gate: GateDep
    ) -> store.ExchangeView:
        return await _act(commands, caller(request, gate), cmd.CancelExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/record", operation_id="recordTime", status_code=HTTP_200_OK)
    async def record(
        self,
        exchange_id: FromPath[str],
        request: AnyRequest,
        data: JSONBody[RecordBody],
        commands: CommandsDep,
        gate: GateDep,
    ) -> store.ExchangeView:
        who = caller(request, gate)
        return await _act(commands, who, cmd.RecordTime(exchange=exchange_id, minutes=data.minutes, memo=data.memo))

    @post("/{exchange_id:str}/confirm", operation_id="confirmTime", status_code=HTTP_200_OK)
    async def confirm(
        self, exchange_id: FromPath[str], request: AnyRequest, commands: CommandsDep, gate: GateDep
    ) -> store.ExchangeView:
        return await _act(commands, caller(request, gate), cmd.ConfirmExchange(exchange=exchange_id))

    @post("/{exchange_id:str}/dispute", operation_id="disputeTime", status_code=HTTP_200_OK)
    async def dispute(
        self,
        exchange_id: FromPath[str],
        request: AnyRequest,
        data: JSONBody[DisputeBody],
        commands: CommandsDep,
        gate: GateDep,
    ) -> store.ExchangeView:
        who = caller(request, gate)
        return await _act(commands, who, cmd.DisputeExchange(exchange=exchange_id, reason=data.reason))

    @post("/{exchange_id:str}/resolve", operation_id="resolveDispute", status_code=HTTP_200_OK)
    async def resolve(
        self, exchange_id: FromPath[str], data: JSONBody[ResolveBody], commands: CommandsDep, me: Me
    ) -> store.ExchangeView:
        return await _act(commands, coordinator(me), cmd.ResolveDispute(exchange=exchange_id, minutes=data.minutes))


def needs_action(member: str, exchanges: list[store.ExchangeView]) -> Actions:
    answer, record, confirm, others = [], [], [], []
    for ex in exchanges:
        mine = next((p for p in ex.parties if p.member == member), None)
        if mine is None:
            continue
        if ex.status == "proposed" and mine.answer is None:
            answer.append(ex)
        elif (
            mine.side == "provider"
            and any(line.provider == member and line.state == "open" for line in ex.lines)
            and ex.status not in ("proposed",)
        ):
            record.append(ex)
        elif mine.side == "receiver" and any(line.receiver == member and line.state == "recorded" for line in ex.lines):
            confirm.append(ex)
        else:
            others.append(ex)
    return Actions(to_answer=answer, to_record=record, to_confirm=confirm, waiting_for_others=others)


async def exchange_view(pool: asyncpg.Pool, exchange_id: str, actor: Actor) -> store.ExchangeView:
    async with pool.acquire() as conn:
        found = await store.exchanges(conn, [exchange_id])
    if not found or (
        actor.member not in {p.member for p in found[0].parties} and actor.role not in ("coordinator", "auditor")
    ):
        raise NotFound(f"exchange {exchange_id} does not exist")
    return found[0]


async def _act(commands: Commands, who: Actor | auth.Credentials, command: cmd.ExchangeCommand) -> store.ExchangeView:
    """Act on the exchange and answer with it as the action left it."""
    return await commands.act(who, command)


async def member_exchanges(pool: asyncpg.Pool, member: str, *, open_only: bool, limit: int) -> list[store.ExchangeView]:
    """The member's exchanges, newest first (``open_only``: those still under way)."""
    async with pool.acquire() as conn:
        return await store.member_exchanges(conn, member, open_only=open_only, limit=limit)


async def disputed_exchanges(pool: asyncpg.Pool, limit: int) -> list[store.ExchangeView]:
    """Exchanges with a disputed or refused line, for coordinators to resolve."""
    async with pool.acquire() as conn:
        return await store.disputed_exchanges(conn, limit)
