"""HTTP controllers of the ledger and their request/response Structs. Thin: parse, call, shape."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from services.ledger import store, tlog
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
from shared.errors import Invalid, NotFound
from shared.note import NoteError, parse_signature_line
from shared.web import StrictRequest

_ACCOUNT_RE = re.compile(ACCOUNT_ID_PATTERN)
_TRANSFER_RE = re.compile(TRANSFER_ID_PATTERN)
_ORIGIN_RE = re.compile(ORIGIN_PATTERN)
MAX_RANGE = 1000
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


class EntryView(msgspec.Struct, kw_only=True):
    index: int
    data: str  # base64 of the exact stored bytes (the Merkle leaf is SHA-256(0x00 || bytes))


class Entries(msgspec.Struct, kw_only=True):
    start: int
    entries: list[EntryView]


SignatureLine = Annotated[str, msgspec.Meta(max_length=1000)]


class AddCosignatures(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
    # C2SP signature lines, "— <witness> <base64(key id || timestamp || signature)>".
    signatures: Annotated[list[SignatureLine], msgspec.Meta(min_length=1, max_length=64)]


class CheckpointView(msgspec.Struct, kw_only=True):
    size: int
    note: str  # the signed checkpoint note as the log signed it (no cosignatures)


class Checkpoints(msgspec.Struct, kw_only=True):
    checkpoints: list[CheckpointView]


class InclusionProof(msgspec.Struct, kw_only=True):
    index: int
    size: int
    leaf_hash: str
    root: str
    proof: list[str]


class ConsistencyProof(msgspec.Struct, kw_only=True):
    old: int
    new: int
    old_root: str
    new_root: str
    proof: list[str]


class Balance(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    balance: int


class Balances(msgspec.Struct, kw_only=True):
    size: int
    accounts: list[Balance]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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


IndexParam = Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)]


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


class LogController(Controller):
    """The public log: anyone may read it, and verify it."""

    path = "/log"
    tags = ("log",)

    @get("/checkpoint", operation_id="getCheckpoint", media_type="text/plain; charset=utf-8")
    async def checkpoint(self, state: State) -> bytes:
        """The latest signed checkpoint, with every witness cosignature collected for it appended."""
        async with state.pool.acquire() as conn:
            latest = await store.latest_checkpoint(conn)
            if latest is None:
                raise NotFound("the log has no checkpoint yet")
            cosigned = await store.cosignatures_at(conn, latest[0])
        return latest[1] + "".join(cosigned).encode()

    @post(
        "/cosignatures",
        operation_id="addCosignatures",
        guards=[require_federation],
        status_code=HTTP_204_NO_CONTENT,
        request_class=StrictRequest,
    )
    async def add_cosignatures(self, data: JSONBody[AddCosignatures], state: State) -> None:
        """Keep witnesses' cosignatures of one of our checkpoints (the federation verified them against each
        witness's key), to serve with that checkpoint."""
        lines = []
        for line in data.signatures:
            try:
                signature = parse_signature_line(line)
            except NoteError as exc:
                raise Invalid(f"not a cosignature line: {exc}") from None
            lines.append((signature.name, signature.key_id, signature.to_line()))
        async with state.pool.acquire() as conn:
            if await store.checkpoint_at(conn, data.size) is None:
                raise NotFound(f"the log signed no checkpoint of size {data.size}")
            await store.add_cosignatures(conn, data.size, lines)

    @get("/checkpoints", operation_id="getCheckpoints")
    async def checkpoints(
        self,
        state: State,
        after: Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_RANGE)] = 100,
    ) -> Checkpoints:
        """The signed checkpoints of sizes above ``after``, oldest first: one per committed batch, so a reader can
        verify the log batch by batch (a neighbour's publisher sends each batch with its checkpoint)."""
        async with state.pool.acquire() as conn:
            rows = await store.checkpoints_after(conn, after, limit)
        return Checkpoints(checkpoints=[CheckpointView(size=size, note=note.decode()) for size, note in rows])

    @get("/entries", operation_id="getEntries")
    async def entries(
        self,
        state: State,
        start: IndexParam = 0,
        end: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
    ) -> Entries:
        """Entries [start, end) as stored, at most 1000 per call."""
        end = start + MAX_RANGE if end is None else min(end, start + MAX_RANGE)
        async with state.pool.acquire() as conn:
            rows = await store.entries_range(conn, start, end)
        return Entries(start=start, entries=[EntryView(index=start + i, data=_b64(d)) for i, d in enumerate(rows)])

    @get("/tile/{path:path}", operation_id="getTile", media_type="application/octet-stream")
    async def tile(self, path: FromPath[str], state: State) -> Response[bytes]:
        async with state.pool.acquire() as conn:
            data = await tlog.tile_bytes(conn, "tile/" + path.lstrip("/"))
        return Response(data, media_type="application/octet-stream")

    @get("/proof/inclusion", operation_id="getInclusionProof")
    async def inclusion(self, state: State, index: IndexParam, size: IndexParam) -> InclusionProof:
        async with state.pool.acquire() as conn:
            proof, leaf, root = await tlog.inclusion_proof(conn, index, size)
        return InclusionProof(
            index=index, size=size, leaf_hash=_b64(leaf), root=_b64(root), proof=[_b64(h) for h in proof]
        )

    @get("/proof/consistency", operation_id="getConsistencyProof")
    async def consistency(self, state: State, old: IndexParam, new: IndexParam) -> ConsistencyProof:
        async with state.pool.acquire() as conn:
            proof, old_root, new_root = await tlog.consistency_proof(conn, old, new)
        return ConsistencyProof(
            old=old, new=new, old_root=_b64(old_root), new_root=_b64(new_root), proof=[_b64(h) for h in proof]
        )

    @get("/proof/bundle", operation_id="getProofBundle", media_type="text/plain; charset=utf-8")
    async def bundle(self, state: State, index: IndexParam) -> str:
        """A C2SP tlog-proof for one entry (save it as ``.tlog-proof`` and verify it offline)."""
        async with state.pool.acquire() as conn:
            return await tlog.proof_bundle(conn, index)

    @get("/balances", operation_id="getBalances")
    async def balances(self, state: State) -> Balances:
        """Every account's balance after the first ``size`` entries of the log (the current size), read in one
        snapshot. Public, like the log itself (which reveals every balance): an auditor compares these with the
        balances replayed from the entries to exactly ``size``."""
        async with state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            size = (await store.head(conn)).size
            rows = await store.all_balances(conn)
        return Balances(size=size, accounts=[Balance(id=i, kind=k, balance=b) for i, k, b in rows])


@get("/health", operation_id="health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"])
async def ready(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    async with state.pool.acquire() as conn:
        head = await store.head(conn)
    return {"status": "ready", "log_size": head.size}
