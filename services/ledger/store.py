"""The only module of the ledger that talks SQL. Queries live in queries.sql; results come back as Structs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import asyncpg
import msgspec

from services.ledger.batch import (
    AcceptanceRow,
    BatchWrite,
    ChangedAccountRow,
    DecisionRow,
    InFlightRow,
    NewAccountRow,
    TransferRow,
    columns,
    tile_columns,
)
from services.ledger.commands import (
    ChangeLimits,
    CloseAccount,
    Command,
    DecideRemote,
    MakeTransfer,
    OpenAccount,
    RecordAcceptance,
    Reverse,
    ReverseRejected,
)
from services.ledger.entries import transfer_id
from services.ledger.ledger import Account, Book, DecisionRecord, OpenRecord, TransferRecord
from shared.db import Connection, load_queries

MIGRATIONS = Path(__file__).with_name("migrations")
Q = load_queries(Path(__file__).with_name("queries.sql"))


class Head(msgspec.Struct, frozen=True):
    size: int
    root: bytes


class AccountRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    floor: int
    ceiling: int | None
    balance: int
    closed: bool
    peer: str | None
    opened_index: int


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """A decided neighbour transfer: where the decision sits in the log, and its stored bytes."""

    index: int
    data: bytes


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    delta: int
    balance: int
    transfer: str
    counterparty: str
    data: bytes


async def begin_locked(conn: Connection) -> None:
    """Begin a transaction holding the ledger's single-writer lock until ``commit`` or ``rollback``."""
    await conn.execute(Q["begin_locked"])


async def commit(conn: Connection) -> None:
    await conn.execute(Q["commit"])


async def rollback(conn: Connection) -> None:
    await conn.execute(Q["rollback"])


async def head(conn: Connection) -> Head:
    row = await conn.fetchrow(Q["head"])
    assert row is not None
    return Head(row["size"], bytes(row["root"]))


async def right_edge_tiles(conn: Connection) -> dict[int, bytes]:
    return {r["level"]: bytes(r["hashes"]) for r in await conn.fetch(Q["right_edge_tiles"])}


@dataclass(slots=True)
class _Referenced:
    """What a batch's commands name, so that a book can be filled with exactly that."""

    transfer_ids: set[str] = field(default_factory=set)
    account_ids: set[str] = field(default_factory=set)
    opens: list[OpenAccount] = field(default_factory=list)
    # Transfers a command names by id (to reverse it, or to record the neighbour's acceptance of it).
    named_ids: set[str] = field(default_factory=set)
    decisions: list[DecideRemote] = field(default_factory=list)


def _referenced(commands: list[Command], *, with_keys: bool) -> _Referenced:
    """The transfers, accounts, opens, reversals and cross-network decisions a batch names.

    The ids derived from idempotency keys are computed only ``with_keys`` (the hot path leaves them to the index).
    """
    refs = _Referenced()
    for command in commands:
        if isinstance(command, MakeTransfer):
            if with_keys:
                refs.transfer_ids.add(transfer_id(command.key))
            refs.account_ids.update((command.payer, command.payee))
        elif isinstance(command, Reverse | ReverseRejected):
            if with_keys:
                refs.transfer_ids.add(transfer_id(command.key))
            refs.transfer_ids.add(command.transfer)
            refs.named_ids.add(command.transfer)
        elif isinstance(command, RecordAcceptance):
            refs.transfer_ids.add(command.transfer)
            refs.named_ids.add(command.transfer)
        elif isinstance(command, OpenAccount):
            refs.opens.append(command)
        elif isinstance(command, ChangeLimits | CloseAccount):
            refs.account_ids.add(command.account)
        elif isinstance(command, DecideRemote):
            refs.decisions.append(command)
            refs.account_ids.add(command.payee)
    return refs


def _transfer_record(r: asyncpg.Record) -> TransferRecord:
    return TransferRecord(
        id=r["id"],
        index=r["idx"],
        fingerprint=bytes(r["fingerprint"]),
        payer=r["payer"],
        payee=r["payee"],
        minutes=r["minutes"],
        reversed_by=r["reversed_by"],
        accepted=None
        if r["accepted_idx"] is None
        else DecisionRecord(index=r["accepted_idx"], fingerprint=bytes(r["accepted_fingerprint"])),
    )


async def _fill(conn: Connection, book: Book, refs: _Referenced) -> None:
    account_ids = set(refs.account_ids)
    if refs.opens:
        for r in await conn.fetch(Q["opens_by_key"], [o.key for o in refs.opens]):
            book.opens[r["open_key"]] = OpenRecord(
                account=r["id"], fingerprint=bytes(r["open_fingerprint"]), index=r["opened_idx"]
            )
    origins = {o.peer for o in refs.opens if o.peer is not None} | {d.origin for d in refs.decisions}
    if origins:
        peers = {r["peer"]: r["id"] for r in await conn.fetch(Q["peers_by_origin"], list(origins))}
        book.peers.update(peers)
        account_ids.update(peers.values())
    if refs.decisions:
        rows = await conn.fetch(
            Q["decisions_by_key"], [d.origin for d in refs.decisions], [d.transfer for d in refs.decisions]
        )
        for r in rows:
            book.decisions[(r["origin"], r["transfer"])] = DecisionRecord(
                index=r["idx"], fingerprint=bytes(r["fingerprint"])
            )
    missing = [a for a in account_ids if a not in book.accounts]
    if missing:
        for r in await conn.fetch(Q["accounts_by_id"], missing):
            book.accounts[r["id"]] = Account(
                id=r["id"],
                kind=r["kind"],
                floor=r["floor"],
                ceiling=r["ceiling"],
                balance=r["balance"],
                closed=r["closed"],
                peer=r["peer"],
                in_flight=r["in_flight"],
            )


async def load_locked(conn: Connection, commands: list[Command], default_floor: int) -> tuple[Head, Book]:
    """Under the writer lock: the tree head and everything the commands can touch, read fresh."""
    refs = _referenced(commands, with_keys=True)
    rows = await conn.fetch(Q["head_and_transfers"], list(refs.transfer_ids))
    head = Head(rows[0]["size"], bytes(rows[0]["root"]))
    book = Book(default_floor=default_floor)
    for r in rows:
        if r["id"] is not None:
            book.transfers[r["id"]] = _transfer_record(r)
            refs.account_ids.update((r["payer"], r["payee"]))
    await _fill(conn, book, refs)
    return head, book


def is_filled(book: Book, commands: list[Command]) -> bool:
    """Whether a cached book already holds all that ``fill_book`` would read for these commands."""
    refs = _referenced(commands, with_keys=False)
    if refs.opens or refs.decisions:
        return False
    for tid in refs.named_ids:
        record = book.transfers.get(tid)
        if record is None:
            return False
        refs.account_ids.update((record.payer, record.payee))
    return all(a in book.accounts for a in refs.account_ids)


async def fill_book(conn: Connection, book: Book, commands: list[Command]) -> None:
    """Without the lock: add to a cached book what it lacks for these commands (usually nothing).

    Transfers are looked up only when a batch names one the cache does not hold (to reverse it, or to record the
    neighbour's acceptance of it); whether a new key was used before is left to the unique index (and to
    ``find_transfers`` for refused commands). Cross-network decisions and peer accounts are always read: the cache
    does not hold them.
    """
    refs = _referenced(commands, with_keys=False)
    unknown = [tid for tid in refs.named_ids if tid not in book.transfers]
    if unknown:
        for record in (await find_transfers(conn, unknown)).values():
            book.transfers[record.id] = record
    for tid in refs.named_ids:
        if tid in book.transfers:
            refs.account_ids.update((book.transfers[tid].payer, book.transfers[tid].payee))
    await _fill(conn, book, refs)


async def find_transfers(conn: Connection, ids: list[str]) -> dict[str, TransferRecord]:
    return {r["id"]: _transfer_record(r) for r in await conn.fetch(Q["transfers_by_id"], ids)}


async def write_batch(conn: Connection, w: BatchWrite) -> None:
    """Append the batch and move the head, in one statement (atomic on its own, or inside the locked path's
    transaction)."""
    if not (w.new_accounts or w.changed_accounts or w.decisions or w.acceptances or w.in_flight):
        await conn.execute(
            Q["write_transfers"],
            w.start,
            w.entry_data,
            *columns(w.transfers, TransferRow),
            *tile_columns(w.tiles),
            w.size,
            w.root,
            w.checkpoint,
        )
        return
    await conn.execute(
        Q["write_batch"],
        w.start,
        w.entry_data,
        *columns(w.new_accounts, NewAccountRow),
        *columns(w.changed_accounts, ChangedAccountRow),
        *columns(w.transfers, TransferRow),
        *tile_columns(w.tiles),
        w.size,
        w.root,
        w.checkpoint,
        *columns(w.decisions, DecisionRow),
        *columns(w.acceptances, AcceptanceRow),
        *columns(w.in_flight, InFlightRow),
    )


async def entries_by_index(conn: Connection, indexes: list[int]) -> dict[int, bytes]:
    return {r["idx"]: bytes(r["data"]) for r in await conn.fetch(Q["entries_by_index"], indexes)}


async def entries_range(conn: Connection, start: int, end: int) -> list[bytes]:
    return [bytes(r["data"]) for r in await conn.fetch(Q["entries_range"], start, end)]


class EntryBundle(msgspec.Struct, frozen=True):
    """The stored entries of an index range, framed as a C2SP tlog-tiles entry bundle."""

    found: int  # entries stored in the range
    longest: int  # bytes in the longest entry (the framing holds at most 0xFFFF)
    data: bytes


async def entry_bundle(conn: Connection, start: int, end: int) -> EntryBundle:
    row = await conn.fetchrow(Q["entry_bundle"], start, end)
    assert row is not None
    return EntryBundle(row["count"], row["longest"], bytes(row["bundle"]))


async def latest_checkpoint(conn: Connection) -> tuple[int, bytes] | None:
    row = await conn.fetchrow(Q["latest_checkpoint"])
    return None if row is None else (row["size"], bytes(row["note"]))


async def checkpoints_after(conn: Connection, size: int, limit: int) -> list[tuple[int, bytes]]:
    """The signed checkpoints of sizes above ``size``, oldest first (one per committed batch)."""
    return [(r["size"], bytes(r["note"])) for r in await conn.fetch(Q["checkpoints_after"], size, limit)]


async def add_cosignatures(conn: Connection, size: int, cosignatures: list[tuple[str, int, str]]) -> None:
    """Keep witnesses' cosignature lines (witness name, key id, line) on the checkpoint of ``size``; a witness's
    newer cosignature of the same checkpoint replaces its older one."""
    await conn.execute(
        Q["add_cosignatures"],
        size,
        [w for w, _, _ in cosignatures],
        [k for _, k, _ in cosignatures],
        [line for _, _, line in cosignatures],
    )


async def cosignatures_at(conn: Connection, size: int) -> list[str]:
    return [r["line"] for r in await conn.fetch(Q["cosignatures_at"], size)]


async def checkpoint_at(conn: Connection, size: int) -> bytes | None:
    row = await conn.fetchrow(Q["checkpoint_at"], size)
    return None if row is None else bytes(row["note"])


async def tiles(conn: Connection, coords: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    if not coords:
        return {}
    levels, indexes = zip(*coords, strict=True)
    rows = await conn.fetch(Q["tiles_by_coord"], list(levels), list(indexes))
    return {(r["level"], r["idx"]): bytes(r["hashes"]) for r in rows}


async def tile(conn: Connection, level: int, index: int) -> bytes | None:
    value = await conn.fetchval(Q["tile"], level, index)
    return None if value is None else bytes(value)


async def account(conn: Connection, account_id: str) -> AccountRow | None:
    r = await conn.fetchrow(Q["account"], account_id)
    if r is None:
        return None
    return AccountRow(
        id=r["id"],
        kind=r["kind"],
        floor=r["floor"],
        ceiling=r["ceiling"],
        balance=r["balance"],
        closed=r["closed"],
        peer=r["peer"],
        opened_index=r["opened_idx"],
    )


async def decision(conn: Connection, origin: str, transfer: str) -> Decision | None:
    """This network's decision on ``origin``'s transfer ``transfer``, if it has made one."""
    r = await conn.fetchrow(Q["decision"], origin, transfer)
    return None if r is None else Decision(index=r["idx"], data=bytes(r["data"]))


async def balance_at_size(conn: Connection, account_id: str, size: int) -> int:
    """The account's balance after the first ``size`` entries of the log."""
    value = await conn.fetchval(Q["balance_at_size"], account_id, size)
    return int(value or 0)


async def statement(conn: Connection, account_id: str, before: int, limit: int) -> list[Posting]:
    rows = await conn.fetch(Q["statement"], account_id, before, limit)
    return [
        Posting(
            index=r["idx"],
            delta=r["delta"],
            balance=r["balance"],
            transfer=r["transfer"],
            counterparty=r["counterparty"],
            data=bytes(r["data"]),
        )
        for r in rows
    ]


class Balance(NamedTuple):
    """An account's current balance (a NamedTuple: callers unpack it)."""

    id: str
    kind: str
    balance: int


async def all_balances(conn: Connection) -> list[Balance]:
    return [Balance(id=r["id"], kind=r["kind"], balance=r["balance"]) for r in await conn.fetch(Q["all_balances"])]
