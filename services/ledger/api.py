"""HTTP controllers of the ledger's accounts and transfers, and their request/response Structs (the public log's are in
``log_api``, cross-network trades' in ``crossnet_api``). Thin: parse, call, shape."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from services.ledger import store
from services.ledger.access import Access, require_reader_of, require_writer
from services.ledger.appender import Appended, Appender
from services.ledger.commands import (
    Ceiling,
    ChangeLimits,
    CloseAccount,
    Floor,
    Key,
    MakeTransfer,
    OpenAccount,
    Reverse,
)
from services.ledger.entries import (
    ACCOUNT_ID_PATTERN,
    ORIGIN_PATTERN,
    TRANSFER_ID_PATTERN,
    AccountOpened,
    Remote,
    Transfer,
)
from shared.errors import NotFound
from shared.web import StrictRequest

_ACCOUNT_RE = re.compile(ACCOUNT_ID_PATTERN)
_TRANSFER_RE = re.compile(TRANSFER_ID_PATTERN)
_ORIGIN_RE = re.compile(ORIGIN_PATTERN)
MAX_INDEX = 2**62


class AccountView(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    floor: int
    ceiling: int | None
    balance: int
    closed: bool
    peer: str | None
    opened_index: int
    # Balance after the first ``as_of_size`` log entries (the current size unless asked otherwise).
    as_of_size: int | None = None
    # Returned when the account is opened (and on a replay of that open): lets its member read it.
    owner_token: str | None = None


class TransferView(msgspec.Struct, kw_only=True):
    id: str
    index: int
    payer: str
    payee: str
    minutes: int
    memo_digest: str | None
    exchange_ref: str | None
    reverses: str | None
    at: str
    replayed: bool
    # The other network's side of a cross-network transfer.
    remote: Remote | None = None


class LimitsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    floor: Floor
    ceiling: Ceiling | None = None


class ReverseBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key


class StatementLine(msgspec.Struct, kw_only=True):
    index: int
    transfer: str
    counterparty: str
    delta: int
    balance: int
    reverses: str | None
    memo_digest: str | None
    exchange_ref: str | None
    at: str
    remote: Remote | None = None


class Statement(msgspec.Struct, kw_only=True):
    account: str
    lines: list[StatementLine]
    # Pass as ``before`` to read the next (older) page; absent on the last page.
    next_before: int | None = None


def _account_id(value: str) -> str:
    if not _ACCOUNT_RE.match(value):
        raise NotFound(f"account {value} does not exist")
    return value


def transfer_view(done: Appended) -> Response[TransferView]:
    entry = done.entry
    assert isinstance(entry, Transfer)
    view = TransferView(
        id=entry.id,
        index=done.index,
        payer=entry.payer,
        payee=entry.payee,
        minutes=entry.minutes,
        memo_digest=entry.memo_digest,
        exchange_ref=entry.exchange_ref,
        reverses=entry.reverses,
        at=entry.at.isoformat(),
        replayed=done.replayed,
        remote=entry.remote,
    )
    return Response(view, status_code=HTTP_200_OK if done.replayed else HTTP_201_CREATED)


async def _account_view(state: State, account_id: str, owner_token: str | None = None) -> AccountView:
    async with state.pool.acquire() as conn:
        row = await store.account(conn, account_id)
    if row is None:
        raise NotFound(f"account {account_id} does not exist")
    return AccountView(**msgspec.structs.asdict(row), owner_token=owner_token)


class AccountController(Controller):
    path = "/accounts"
    tags = ("accounts",)
    # Bodies decoded strictly by the declared type of ``data`` (see shared.web).
    request_class = StrictRequest

    @post("/", operation_id="openAccount", guards=[require_writer], status_code=HTTP_201_CREATED)
    async def open(self, data: JSONBody[OpenAccount], state: State) -> Response[AccountView]:
        appender: Appender = state.appender
        access: Access = state.access
        done = await appender.submit(data)
        assert isinstance(done.entry, AccountOpened)
        account = done.entry.account
        view = await _account_view(state, account, owner_token=access.owner_token(account))
        return Response(view, status_code=HTTP_200_OK if done.replayed else HTTP_201_CREATED)

    @get("/{account_id:str}", operation_id="getAccount", guards=[require_reader_of])
    async def read(
        self,
        account_id: FromPath[str],
        state: State,
        at_size: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
    ) -> AccountView:
        view = await _account_view(state, _account_id(account_id))
        async with state.pool.acquire() as conn:
            size = (await store.head(conn)).size
            if at_size is not None and at_size < size:
                view.balance = await store.balance_at_size(conn, view.id, at_size)
                size = at_size
        view.as_of_size = size
        return view

    @put("/{account_id:str}/limits", operation_id="changeLimits", guards=[require_writer])
    async def change_limits(self, account_id: FromPath[str], data: JSONBody[LimitsBody], state: State) -> AccountView:
        command = ChangeLimits(account=_account_id(account_id), floor=data.floor, ceiling=data.ceiling)
        await state.appender.submit(command)
        return await _account_view(state, account_id)

    @post("/{account_id:str}/close", operation_id="closeAccount", guards=[require_writer], status_code=200)
    async def close(self, account_id: FromPath[str], state: State) -> AccountView:
        await state.appender.submit(CloseAccount(account=_account_id(account_id)))
        return await _account_view(state, account_id)

    @get("/{account_id:str}/statement", operation_id="getStatement", guards=[require_reader_of])
    async def statement(
        self,
        account_id: FromPath[str],
        state: State,
        before: Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)] = MAX_INDEX,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> Statement:
        await _account_view(state, _account_id(account_id))
        async with state.pool.acquire() as conn:
            postings = await store.statement(conn, account_id, before, limit + 1)
        lines = []
        for p in postings[:limit]:
            entry = msgspec.json.decode(p.data, type=Transfer)
            lines.append(
                StatementLine(
                    index=p.index,
                    transfer=p.transfer,
                    counterparty=p.counterparty,
                    delta=p.delta,
                    balance=p.balance,
                    reverses=entry.reverses,
                    memo_digest=entry.memo_digest,
                    exchange_ref=entry.exchange_ref,
                    at=entry.at.isoformat(),
                    remote=entry.remote,
                )
            )
        more = len(postings) > limit
        return Statement(account=account_id, lines=lines, next_before=lines[-1].index if more else None)


class TransferController(Controller):
    path = "/transfers"
    tags = ("transfers",)
    # Bodies decoded strictly by the declared type of ``data`` (see shared.web).
    request_class = StrictRequest

    @post("/", operation_id="makeTransfer", guards=[require_writer], status_code=HTTP_201_CREATED)
    async def transfer(self, data: JSONBody[MakeTransfer], state: State) -> Response[TransferView]:
        return transfer_view(await state.appender.submit(data))

    @post(
        "/{transfer_id:str}/reversal",
        operation_id="reverseTransfer",
        guards=[require_writer],
        status_code=HTTP_201_CREATED,
    )
    async def reverse(
        self, transfer_id: FromPath[str], data: JSONBody[ReverseBody], state: State
    ) -> Response[TransferView]:
        if not _TRANSFER_RE.match(transfer_id):
            raise NotFound(f"transfer {transfer_id} does not exist")
        return transfer_view(await state.appender.submit(Reverse(key=data.key, transfer=transfer_id)))


@get("/health", operation_id="health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"])
async def ready(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    async with state.pool.acquire() as conn:
        head = await store.head(conn)
    return {"status": "ready", "log_size": head.size}
