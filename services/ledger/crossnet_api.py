"""HTTP controller of cross-network trades: the neighbours' transfers this network decides, their acceptances of
ours, and the reversal of ours they rejected (the federation's credential only; decisions are public to read)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from services.ledger import store
from services.ledger.access import require_federation
from services.ledger.api import TransferView, transfer_view
from services.ledger.appender import Appended, Appender
from services.ledger.commands import Command, DecideRemote, RecordAcceptance, ReverseRejected
from services.ledger.entries import (
    ORIGIN_PATTERN,
    TRANSFER_ID_PATTERN,
    CrossnetAccepted,
    CrossnetRejected,
    LogEntry,
    Transfer,
    entry_decoder,
)
from shared.errors import DomainError, NotFound
from shared.problems import Problem, problem_of
from shared.web import StrictRequest

_TRANSFER_RE = re.compile(TRANSFER_ID_PATTERN)
_ORIGIN_RE = re.compile(ORIGIN_PATTERN)
# Decisions or acceptances one batch request may carry (well within the body size limit).
MAX_BATCH = 200


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

    decisions: Annotated[list[DecideRemote], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class RecordMany(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Many neighbours' acceptances of our payments to record at once."""

    acceptances: Annotated[list[RecordAcceptance], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class DecisionOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What came of one decision of a batch: the status ``decide`` would answer, with its body."""

    status: int
    decision: DecisionView | None = None
    problem: Problem | None = None


class DecisionOutcomes(msgspec.Struct, kw_only=True):
    """One outcome per decision asked for, in the same order."""

    results: list[DecisionOutcome]


class AcceptanceOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What came of one acceptance record of a batch: the status ``accepted`` would answer, with its body."""

    status: int
    acceptance: AcceptanceView | None = None
    problem: Problem | None = None


class AcceptanceOutcomes(msgspec.Struct, kw_only=True):
    """One outcome per acceptance asked for, in the same order."""

    results: list[AcceptanceOutcome]


def _acceptance_view(done: Appended) -> AcceptanceView:
    entry = done.entry
    assert isinstance(entry, CrossnetAccepted)
    return AcceptanceView(
        origin=entry.origin,
        transfer=entry.transfer,
        decision_index=entry.index,
        index=done.index,
        at=entry.at.isoformat(),
        replayed=done.replayed,
    )


def _status(done: Appended) -> int:
    return HTTP_200_OK if done.replayed else HTTP_201_CREATED


async def _submit_all(appender: Appender, commands: Sequence[Command]) -> list[Appended | DomainError]:
    """Submit every command at once (they reach the log in the same batches): each one's entry, or its refusal."""
    done = await asyncio.gather(*(appender.submit(c) for c in commands), return_exceptions=True)
    answers: list[Appended | DomainError] = []
    for answer in done:
        if isinstance(answer, BaseException) and not isinstance(answer, DomainError):
            raise answer  # not the command's fault (the database went away): the whole request fails
        answers.append(answer)
    return answers


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
        results = []
        for answer in await _submit_all(state.appender, data.decisions):
            if isinstance(answer, DomainError):
                results.append(DecisionOutcome(status=answer.status, problem=problem_of(answer)))
            else:
                view = _decision_view(answer.index, answer.entry, replayed=answer.replayed)
                results.append(DecisionOutcome(status=_status(answer), decision=view))
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
        return Response(_acceptance_view(done), status_code=_status(done))

    @post(
        "/acceptances/batch",
        operation_id="recordRemoteAcceptances",
        guards=[require_federation],
        status_code=HTTP_200_OK,
    )
    async def accepted_many(self, data: JSONBody[RecordMany], state: State) -> AcceptanceOutcomes:
        """Record many neighbours' acceptances in one request, each exactly as ``accepted`` would; a refusal of one
        is its outcome and does not stop the others."""
        results = []
        for answer in await _submit_all(state.appender, data.acceptances):
            if isinstance(answer, DomainError):
                results.append(AcceptanceOutcome(status=answer.status, problem=problem_of(answer)))
            else:
                results.append(AcceptanceOutcome(status=_status(answer), acceptance=_acceptance_view(answer)))
        return AcceptanceOutcomes(results=results)

    @post("/reversals", operation_id="reverseRejected", guards=[require_federation], status_code=HTTP_201_CREATED)
    async def reverse_rejected(self, data: JSONBody[ReverseRejected], state: State) -> Response[TransferView]:
        """Reverse one of our payments to a neighbour's member that the neighbour rejected (read in its log): the
        member gets the minutes back. Only here, and only for the federation: a payment still in flight may yet be
        accepted."""
        return transfer_view(await state.appender.submit(data))
