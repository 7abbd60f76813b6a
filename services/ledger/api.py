"""HTTP controllers of the ledger's accounts, transfers and cross-network decisions, and their request/response
Structs (the public log's are in ``log_api``). Thin: parse, call, shape."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from services.ledger import store
from services.ledger.access import Access, require_federation, require_reader_of, require_writer
from services.ledger.appender import Appended, Appender
from services.ledger.commands import (
    Ceiling,
    ChangeLimits,
    CloseAccount,
    DecideRemote,
    Floor,
    Key,
    MakeTransfer,
    OpenAccount,
    RecordAcceptance,
    Reverse,
    ReverseRejected,
)
from services.ledger.entries import (
    ACCOUNT_ID_PATTERN,
    ORIGIN_PATTERN,
    TRANSFER_ID_PATTERN,
    AccountOpened,
    CrossnetAccepted,
    CrossnetRejected,
    LogEntry,
    Remote,
    Transfer,
    entry_decoder,
)
from shared.errors import DomainError, NotFound
from shared.problems import Problem, problem_of
from shared.web import StrictRequest

_ACCOUNT_RE = re.compile(ACCOUNT_ID_PATTERN)
_TRANSFER_RE = re.compile(TRANSFER_ID_PATTERN)
_ORIGIN_RE = re.compile(ORIGIN_PATTERN)
# Decisions one batch request may carry (well within the body size limit).
MAX_DECISIONS = 200
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


def _transfer_view(done: Appended) -> Response[TransferView]:
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
        return _transfer_view(await state.appender.submit(data))

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
        return _transfer_view(await state.appender.submit(Reverse(key=data.key, transfer=transfer_id)))


class DecisionView(msgspec.Struct, kw_only=True):
    """This network's decision on a neighbour's transfer to one of its accounts."""

    origin: str
    transfer: str  # the neighbour's transfer id
    transfer_index: int  # that transfer's index in the neighbour's log
    payee: str
    minutes: int
    decision: Literal["accepted", "rejected"]
    reason: str | None  # why it was rejected
    id: str | None  # the local transfer (peer account -> payee) when accepted
    index: int  # the decision's index in this network's log
    at: str
    replayed: bool = False


class AcceptanceView(msgspec.Struct, kw_only=True):
    """The record, in this network's log, of a neighbour's acceptance of one of its payments."""

    origin: str  # the neighbour
    transfer: str  # our transfer it accepted
    decision_index: int  # its decision's index in the neighbour's log
    index: int  # the record's index in this network's log
    at: str
    replayed: bool = False


def _decision_view(index: int, entry: LogEntry, *, replayed: bool) -> DecisionView:
    if isinstance(entry, CrossnetRejected):
        return DecisionView(
            origin=entry.origin,
            transfer=entry.transfer,
            transfer_index=entry.index,
            payee=entry.payee,
            minutes=entry.minutes,
            decision="rejected",
            reason=entry.reason,
            id=None,
            index=index,
            at=entry.at.isoformat(),
            replayed=replayed,
        )
    assert isinstance(entry, Transfer)
    remote = entry.remote
    assert remote is not None
    assert remote.transfer is not None
    assert remote.index is not None
    return DecisionView(
        origin=remote.origin,
        transfer=remote.transfer,
        transfer_index=remote.index,
        payee=entry.payee,
        minutes=entry.minutes,
        decision="accepted",
        reason=None,
        id=entry.id,
        index=index,
        at=entry.at.isoformat(),
        replayed=replayed,
    )


class DecideMany(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Many neighbours' transfers to decide at once."""

    decisions: Annotated[list[DecideRemote], msgspec.Meta(min_length=1, max_length=MAX_DECISIONS)]


class DecisionOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What came of one decision of a batch: the status ``decide`` would answer, with its body."""

    status: int
    decision: DecisionView | None = None
    problem: Problem | None = None


class DecisionOutcomes(msgspec.Struct, kw_only=True):
    """One outcome per decision asked for, in the same order."""

    results: list[DecisionOutcome]


class CrossnetController(Controller):
    """Cross-network trades: this network decides the neighbours' transfers to its accounts, once each."""

    path = "/crossnet"
    tags = ("crossnet",)
    # Bodies decoded strictly by the declared type of ``data`` (see shared.web).
    request_class = StrictRequest

    @post("/decisions", operation_id="decideRemoteTransfer", guards=[require_federation], status_code=HTTP_201_CREATED)
    async def decide(self, data: JSONBody[DecideRemote], state: State) -> Response[DecisionView]:
        """Accept a neighbour's transfer or record why not (both are log entries); a repeat returns the first."""
        done = await state.appender.submit(data)
        view = _decision_view(done.index, done.entry, replayed=done.replayed)
        return Response(view, status_code=HTTP_200_OK if done.replayed else HTTP_201_CREATED)

    @post(
        "/decisions/batch", operation_id="decideRemoteTransfers", guards=[require_federation], status_code=HTTP_200_OK
    )
    async def decide_many(self, data: JSONBody[DecideMany], state: State) -> DecisionOutcomes:
        """Decide many neighbours' transfers in one request, each exactly as ``decide`` would (they reach the log in
        the same batches); a refusal of one is its outcome and does not stop the others."""
        done = await asyncio.gather(*(state.appender.submit(d) for d in data.decisions), return_exceptions=True)
        results = []
        for answer in done:
            if isinstance(answer, DomainError):
                results.append(DecisionOutcome(status=answer.status, problem=problem_of(answer)))
            elif isinstance(answer, BaseException):
                raise answer  # not the decision's fault (the database went away): the whole request fails
            else:
                view = _decision_view(answer.index, answer.entry, replayed=answer.replayed)
                results.append(
                    DecisionOutcome(status=HTTP_200_OK if answer.replayed else HTTP_201_CREATED, decision=view)
                )
        return DecisionOutcomes(results=results)

    @get("/decisions/{path:path}", operation_id="getRemoteDecision")
    async def read(self, path: FromPath[str], state: State) -> DecisionView:
        """The decision on ``<origin>/<transfer id>`` (the origin may contain slashes); public, like the log."""
        origin, _, transfer = path.strip("/").rpartition("/")
        if not _ORIGIN_RE.match(origin) or not _TRANSFER_RE.match(transfer):
            raise NotFound(f"no decision on {path.strip('/')}")
        async with state.pool.acquire() as conn:
            found = await store.decision(conn, origin, transfer)
        if found is None:
            raise NotFound(f"{origin}'s transfer {transfer} has not been decided here", transfer=transfer)
        return _decision_view(found.index, entry_decoder.decode(found.data), replayed=False)

    @post(
        "/acceptances", operation_id="recordRemoteAcceptance", guards=[require_federation], status_code=HTTP_201_CREATED
    )
    async def accepted(self, data: JSONBody[RecordAcceptance], state: State) -> Response[AcceptanceView]:
        """Record the neighbour's acceptance of one of our payments (read in its log): its minutes are settled from
        here. Recorded once; a repeat returns the first record."""
        done = await state.appender.submit(data)
        entry = done.entry
        assert isinstance(entry, CrossnetAccepted)
        view = AcceptanceView(
            origin=entry.origin,
            transfer=entry.transfer,
            decision_index=entry.index,
            index=done.index,
            at=entry.at.isoformat(),
            replayed=done.replayed,
        )
        return Response(view, status_code=HTTP_200_OK if done.replayed else HTTP_201_CREATED)

    @post("/reversals", operation_id="reverseRejected", guards=[require_federation], status_code=HTTP_201_CREATED)
    async def reverse_rejected(self, data: JSONBody[ReverseRejected], state: State) -> Response[TransferView]:
        """Reverse one of our payments to a neighbour's member that the neighbour rejected (read in its log): the
        member gets the minutes back. Only here, and only for the federation: a payment still in flight may yet be
        accepted."""
        return _transfer_view(await state.appender.submit(data))


@get("/health", operation_id="health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"])
async def ready(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    async with state.pool.acquire() as conn:
        head = await store.head(conn)
    return {"status": "ready", "log_size": head.size}
