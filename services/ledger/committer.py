"""The batch transaction behind the group-commit writer (``appender.py``): decide a batch, write it, commit.

Usually a batch is decided on state cached from the previous batch and written in one atomic statement. When
another process appended meanwhile (its entries take the same indexes, so the primary key refuses the statement)
or the cache lacks something, the batch is decided again from fresh state under the database's writer lock (the
head row), so several ledger processes can share one database. docs/ledger.md has the details.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.ledger import store
from services.ledger.batch import (
    AcceptanceRow,
    BatchWrite,
    ChangedAccountRow,
    DecisionRow,
    InFlightRow,
    NewAccountRow,
    TransferRow,
)
from services.ledger.commands import (
    Command,
    DecideRemote,
    MakeTransfer,
    OpenAccount,
    RecordAcceptance,
    Reverse,
    ReverseRejected,
    fingerprint,
)
from services.ledger.entries import (
    AccountOpened,
    CrossnetAccepted,
    CrossnetRejected,
    LogEntry,
    Transfer,
    entry_decoder,
    entry_encoder,
    transfer_id,
)
from services.ledger.ledger import Account, Book, Replay, TransferRecord, decide, in_flight_changed
from services.ledger.tlog import CheckpointSigner
from shared import merkle
from shared.db import Connection
from shared.errors import Conflict, DomainError
from shared.tiles import RightEdge

# One logger for the whole writer, the queue and its transaction alike (operators filter on its name).
log = logging.getLogger("services.ledger.appender")


@dataclass(frozen=True, slots=True)
class Appended:
    """What a caller gets back: the entry as stored, its log index, and whether it was a replay."""

    index: int
    data: bytes
    entry: LogEntry
    replayed: bool


class Committer:
    """The writer's knowledge of the log (the state cached from its last batch, and the epoch that voids decisions
    made on a state since thrown away) and the transaction that decides and writes one batch."""

    def __init__(self, signer: CheckpointSigner, *, default_floor: int, cache_transfers: int) -> None:
        self._signer = signer
        self._default_floor = default_floor
        self._state: _State | None = None
        # Bumped whenever the cached state is thrown away, which voids any batch decided ahead on it.
        self._epoch = 0
        # True from the moment a batch is handed to its writing task until it has been decided on the state.
        self.undecided = False
        self._cache_transfers = cache_transfers
        self.decided_ahead = 0  # batches written as decided while the batch before them was being written

    def decide_ahead(self, commands: list[Command]) -> Ahead | None:
        """Decide ``commands`` on the cached state as the batch being written leaves it, when the cache holds all
        it needs; otherwise they are decided in turn."""
        state = self._state
        if state is None or self.undecided:
            return None
        book = Book(accounts=state.accounts, transfers=state.transfers, default_floor=self._default_floor)
        if not store.is_filled(book, commands):
            return None
        outcomes, write = self._decide(book, commands, state.edge)
        return Ahead(self._epoch, book, outcomes, write)

    async def commit(
        self, connect: Callable[[], Awaitable[Connection]], commands: list[Command], ahead: Ahead | None
    ) -> list[Appended | DomainError]:
        """Decide and write one batch on the connection ``connect`` gives; the outcomes are in command order."""
        try:
            conn = await connect()
            state = self._state
            if state is not None:
                if ahead is not None and ahead.epoch != self._epoch:
                    ahead = None  # decided on a state that has since been thrown away
                try:
                    return await self._commit_optimistic(conn, commands, state, ahead)
                except (asyncpg.UniqueViolationError, _Stale) as exc:
                    # Another writer appended since our last batch, or a key was used before we cached it.
                    log.info("ledger batch retried under the writer lock: %s", exc)
                    self._forget_state()
            outcomes, self._state = await self._commit_locked(conn, commands)
            return outcomes
        except BaseException:
            self._forget_state()  # decisions made on it may not have been written
            raise

    def _forget_state(self) -> None:
        self._state = None
        self._epoch += 1

    async def _commit_optimistic(
        self, conn: Connection, commands: list[Command], state: _State, ahead: Ahead | None
    ) -> list[Appended | DomainError]:
        """Decide on the cached state (or take the decision made ahead on it) and write it all in one atomic
        statement (one round trip, no lock).

        The state is current exactly when nobody appended since our last batch; if somebody did, the entries'
        primary key refuses our write (they hold the same indexes) and the caller retries under the lock.
        """
        if ahead is None:
            book = Book(accounts=state.accounts, transfers=state.transfers, default_floor=self._default_floor)
            await store.fill_book(conn, book, commands)
            outcomes, write = self._decide(book, commands, state.edge)
        else:
            book, outcomes, write = ahead.book, ahead.outcomes, ahead.write
            self.decided_ahead += 1
        self.undecided = False
        await self._settle_refusals(conn, commands, outcomes, book)
        refused = any(isinstance(o, DomainError) and not isinstance(o, _Unresolved) for o in outcomes)
        if write.entry_data:
            await store.write_batch(conn, write)
        elif refused and (await store.head(conn)).size != write.start:
            # Refusals were decided on the cache: they stand only if nobody has appended since.
            raise _Stale("the log grew under a batch of refusals")
        await self._resolve_replays(conn, outcomes)
        state.trim(self._cache_transfers)
        return outcomes

    async def _commit_locked(
        self, conn: Connection, commands: list[Command]
    ) -> tuple[list[Appended | DomainError], _State]:
        """Read everything fresh under the database's writer lock, decide, write and commit."""
        await store.begin_locked(conn)
        try:
            head, book = await store.load_locked(conn, commands, self._default_floor)
            edge = RightEdge.from_tiles(head.size, await store.right_edge_tiles(conn))
            if edge.root() != head.root:
                raise RuntimeError("stored tiles do not match the tree head; refusing to append")
            outcomes, write = self._decide(book, commands, edge)
            await self._resolve_replays(conn, outcomes)
            if write.entry_data:
                await store.write_batch(conn, write)
            await store.commit(conn)
        except BaseException:
            await store.rollback(conn)
            raise
        return outcomes, _State(edge, book.accounts, book.transfers)

    async def _settle_refusals(
        self, conn: Connection, commands: list[Command], outcomes: list[Appended | DomainError], book: Book
    ) -> None:
        """A refused transfer whose key the cache did not know may be a retry of one already in the log:
        then the answer is the original (or a conflict), not the refusal."""
        unknown: dict[int, tuple[str, bytes]] = {}
        for position, (command, outcome) in enumerate(zip(commands, outcomes, strict=True)):
            if isinstance(outcome, DomainError) and isinstance(command, MakeTransfer | Reverse | ReverseRejected):
                tid = transfer_id(command.key)
                if tid not in book.transfers:
                    unknown[position] = (tid, fingerprint(command))
        if not unknown:
            return
        found = await store.find_transfers(conn, [tid for tid, _ in unknown.values()])
        for position, (tid, given) in unknown.items():
            if tid in found:
                key = commands[position].key  # type: ignore[union-attr]
                if found[tid].fingerprint == given:
                    outcomes[position] = _Unresolved(found[tid].index)
                else:
                    outcomes[position] = Conflict(
                        f"idempotency key {key!r} was already used for a different request", key=key
                    )

    def _decide(
        self, book: Book, commands: list[Command], edge: RightEdge
    ) -> tuple[list[Appended | DomainError], BatchWrite]:
        """Decide every command in order; collect the rows to write, extend the tree's right edge and sign the
        checkpoint the batch ends at. All of it is fixed here, so the next batch may be decided before this one
        is written."""
        at = datetime.now(UTC)
        start = edge.size
        write = BatchWrite(start=start, size=start)
        outcomes: list[Appended | DomainError] = []
        existing = set(book.accounts)
        touched: set[str] = set()
        opened: list[tuple[AccountOpened, OpenAccount, int]] = []
        size = start
        for command in commands:
            try:
                decided = decide(book, command, at=at, index=size)
            except DomainError as refusal:
                outcomes.append(refusal)
                continue
            if isinstance(decided, Replay):
                outcomes.append(_Unresolved(decided.index))
                continue
            data = entry_encoder.encode(decided)
            write.entry_data.append(data)
            edge.append(merkle.leaf_hash(data))
            if isinstance(decided, Transfer):
                # A transfer inside the network (the common case) is neither remote nor a reversal: no call for it.
                if decided.remote is not None or decided.reverses is not None:
                    self._note_in_flight(book, decided, size, write)
                write.transfers.append(
                    TransferRow(
                        id=decided.id,
                        idx=size,
                        fingerprint=book.transfers[decided.id].fingerprint,
                        payer=decided.payer,
                        payee=decided.payee,
                        minutes=decided.minutes,
                        reverses=decided.reverses,
                        payer_balance=book.accounts[decided.payer].balance,
                        payee_balance=book.accounts[decided.payee].balance,
                    )
                )
                if isinstance(command, DecideRemote):
                    write.decisions.append(_decision_row(book, command, size, None))
            elif isinstance(decided, CrossnetRejected):
                assert isinstance(command, DecideRemote)
                write.decisions.append(_decision_row(book, command, size, decided.reason))
            elif isinstance(decided, CrossnetAccepted):
                assert isinstance(command, RecordAcceptance)
                write.acceptances.append(_acceptance_row(book, decided, size))
                self._note_in_flight(book, decided, size, write)
            elif isinstance(decided, AccountOpened):
                assert isinstance(command, OpenAccount)
                opened.append((decided, command, size))
            else:
                touched.add(decided.account)
            outcomes.append(Appended(size, data, decided, replayed=False))
            size += 1
        # Accounts opened in this batch are inserted with their end-of-batch limits and status.
        for entry, command, index in opened:
            a = book.accounts[entry.account]
            write.new_accounts.append(
                NewAccountRow(
                    id=a.id,
                    kind=a.kind,
                    floor=a.floor,
                    ceiling=a.ceiling,
                    closed=a.closed,
                    peer=entry.peer,
                    opened_idx=index,
                    open_key=command.key,
                    open_fingerprint=fingerprint(command),
                )
            )
        # Balances live in the transfer rows; only limit changes and closures touch an existing account row.
        for account_id in touched & existing:
            a = book.accounts[account_id]
            write.changed_accounts.append(ChangedAccountRow(id=a.id, floor=a.floor, ceiling=a.ceiling, closed=a.closed))
        if write.entry_data:
            write.size = edge.size
            write.root = edge.root()
            write.tiles = edge.take_dirty()
            write.checkpoint = self._signer.sign(edge.size, write.root)
        return outcomes, write

    @staticmethod
    def _note_in_flight(book: Book, entry: LogEntry, index: int, write: BatchWrite) -> None:
        """Write the clearing account's minutes in flight after ``entry``, if it changed them."""
        moved = in_flight_changed(book, entry)
        if moved is not None:
            write.in_flight.append(InFlightRow(account=moved, idx=index, minutes=book.accounts[moved].in_flight))

    async def _resolve_replays(self, conn: Connection, outcomes: list[Appended | DomainError]) -> None:
        """Replayed commands answer with their original entry: from this batch, or read back as stored."""
        wanted = [o.index for o in outcomes if isinstance(o, _Unresolved)]
        if not wanted:
            return
        now = {o.index: o.data for o in outcomes if isinstance(o, Appended)}
        earlier = [index for index in wanted if index not in now]
        stored = {**now, **(await store.entries_by_index(conn, earlier) if earlier else {})}
        for position, outcome in enumerate(outcomes):
            if isinstance(outcome, _Unresolved):
                data = stored[outcome.index]
                outcomes[position] = Appended(outcome.index, data, entry_decoder.decode(data), replayed=True)


@dataclass(slots=True)
class Ahead:
    """A batch decided on the cached state while the batch before it was being written. It stands only if that
    state is still the writer's when its turn comes (same epoch)."""

    epoch: int
    book: Book
    outcomes: list[Appended | DomainError]
    write: BatchWrite


class _Stale(Exception):
    """The cached state turned out to be behind the log."""


@dataclass(slots=True)
class _State:
    """What the writer knows as of the log size it last wrote: valid only while nobody else appends."""

    edge: RightEdge
    accounts: dict[str, Account]
    transfers: dict[str, TransferRecord]

    def trim(self, keep: int) -> None:
        """Forget the oldest cached transfers beyond ``keep`` (a forgotten key is looked up when needed)."""
        excess = len(self.transfers) - keep
        if excess > 0:
            for tid in list(itertools.islice(self.transfers, excess)):
                del self.transfers[tid]


class _Unresolved(DomainError):
    """Stands in for a replayed command's outcome until its original entry has been read back."""

    def __init__(self, index: int) -> None:
        super().__init__("replay not resolved")
        self.index = index


def _decision_row(book: Book, command: DecideRemote, index: int, reason: str | None) -> DecisionRow:
    record = book.decisions[(command.origin, command.transfer)]
    return DecisionRow(
        origin=command.origin, transfer=command.transfer, idx=index, fingerprint=record.fingerprint, reason=reason
    )


def _acceptance_row(book: Book, entry: CrossnetAccepted, index: int) -> AcceptanceRow:
    record = book.transfers[entry.transfer].accepted
    assert record is not None
    return AcceptanceRow(
        transfer=entry.transfer, origin=entry.origin, idx=index, remote_idx=entry.index, fingerprint=record.fingerprint
    )
