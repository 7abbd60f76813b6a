"""The ledger's pure domain: log entry types, commands, and decide/apply.

Nothing here talks to a database or the network. The appender loads the few accounts and transfers a batch
touches into a ``Book``, calls ``decide`` for each command in order (which applies the accepted entry to the
book, so later commands in the same batch see its effect), and writes what was decided.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from shared.errors import AccountClosed, Conflict, InsufficientHours, Invalid, NotFound

AccountKind = Literal["member", "community", "peer"]

# A single transfer may move at most 1,000 hours; anything bigger is a typo, not a favour.
MAX_MINUTES = 60_000
# Balances and limits stay well inside PostgreSQL bigint and JavaScript's safe integers.
MAX_LIMIT = 10**12

Minutes = Annotated[int, msgspec.Meta(ge=1, le=MAX_MINUTES)]
Floor = Annotated[int, msgspec.Meta(ge=-MAX_LIMIT, le=0)]
Ceiling = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]
ACCOUNT_ID_PATTERN = r"^acct_[0-9a-f]{20}$"
TRANSFER_ID_PATTERN = r"^tr_[0-9a-f]{32}$"
AccountId = Annotated[str, msgspec.Meta(pattern=ACCOUNT_ID_PATTERN)]
TransferId = Annotated[str, msgspec.Meta(pattern=TRANSFER_ID_PATTERN)]
# Keys and references are printable text: no control characters (PostgreSQL text cannot even hold NUL).
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ORIGIN_PATTERN = r"^[A-Za-z0-9._/-]{1,200}$"
Origin = Annotated[str, msgspec.Meta(pattern=ORIGIN_PATTERN)]
# An index in a (neighbour's) log.
LogIndex = Annotated[int, msgspec.Meta(ge=0, le=2**62)]

# Why a network refused a neighbour's payment to one of its accounts (recorded in its log).
RejectionReason = Literal["unknown_payee", "not_a_member", "account_closed", "trust_limit", "ceiling"]


# ---- Log entries (stored, hashed, federated: frozen, tagged, never forbid unknown fields) ----


# Entries hold only strings, numbers and other entries' parts, so they can never form a reference cycle: the
# cyclic garbage collector need not track them (gc=False), which makes the millions an audit decodes cheaper.
class Entry(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True, gc=False):
    at: datetime


class AccountOpened(Entry, frozen=True, kw_only=True, tag="ledger.account.opened.v1"):
    account: str
    kind: AccountKind
    floor: int
    ceiling: int | None = None
    # For a peer clearing account: the neighbour network's log origin.
    peer: str | None = None


class LimitsChanged(Entry, frozen=True, kw_only=True, tag="ledger.account.limits.v1"):
    account: str
    floor: int
    ceiling: int | None = None


class AccountClosedEntry(Entry, frozen=True, kw_only=True, tag="ledger.account.closed.v1"):
    account: str


class Remote(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The other network's side of a cross-network transfer.

    Outgoing (payee is a peer account): the neighbour's ``origin`` and the ``account`` to be paid there.
    Incoming (payer is a peer account): the neighbour's ``origin``, its ``transfer`` id and that entry's ``index``
    in the neighbour's log.
    """

    origin: str
    account: str | None = None
    transfer: str | None = None
    index: int | None = None


class Transfer(Entry, frozen=True, kw_only=True, tag="ledger.transfer.v1"):
    id: str
    payer: str
    payee: str
    minutes: int
    # SHA-256(salt || memo), hex; the memo and salt stay with the exchange service.
    memo_digest: str | None = None
    exchange_ref: str | None = None
    reverses: str | None = None
    remote: Remote | None = None


class CrossnetRejected(Entry, frozen=True, kw_only=True, tag="ledger.crossnet.rejected.v1"):
    """This network refused the neighbour ``origin``'s transfer ``transfer`` (at ``index`` in its log)."""

    origin: str
    transfer: str
    index: int
    payee: str
    minutes: int
    # A RejectionReason; read as any string, since a newer neighbour may give reasons this version does not know.
    reason: str


LogEntry = AccountOpened | LimitsChanged | AccountClosedEntry | Transfer | CrossnetRejected

entry_encoder = msgspec.json.Encoder()
entry_decoder = msgspec.json.Decoder(LogEntry)


# ---- Commands (what callers ask for; strict: unknown fields are refused) ----


class OpenAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    kind: AccountKind = "member"
    floor: Floor | None = None
    ceiling: Ceiling | None = None
    peer: Origin | None = None


class ChangeLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    account: AccountId
    floor: Floor
    ceiling: Ceiling | None = None


class CloseAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    account: AccountId


class MakeTransfer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    payer: AccountId
    payee: AccountId
    minutes: Minutes
    memo_digest: Digest | None = None
    exchange_ref: Ref | None = None
    # Required when the payee is a peer clearing account: the account to be paid in that network.
    remote_payee: AccountId | None = None


class Reverse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    transfer: TransferId


class DecideRemote(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Decide a neighbour's transfer to a local account, as read from the neighbour's log."""

    origin: Origin
    transfer: TransferId
    index: LogIndex
    payee: AccountId
    minutes: Minutes
    memo_digest: Digest | None = None


Command = OpenAccount | ChangeLimits | CloseAccount | MakeTransfer | Reverse | DecideRemote


def new_account_id() -> str:
    return "acct_" + secrets.token_hex(10)


def transfer_id(key: str) -> str:
    """The transfer id is derived from the idempotency key, so a replayed key can never make a second id."""
    return "tr_" + hashlib.sha256(b"timebank/transfer-id\x00" + key.encode()).hexdigest()[:32]


def crossnet_transfer_id(origin: str, transfer: str) -> str:
    """The id of the local transfer that accepts ``origin``'s transfer ``transfer``.

    Keys cannot contain NUL, so no idempotency key can ever derive the same id.
    """
    return transfer_id(f"crossnet\x00{origin}\x00{transfer}")


_UNSET_REMOTE_PAYEE = b',"remote_payee":null}'


def fingerprint(command: Command) -> bytes:
    """What a replayed key must match: the whole command, canonically encoded."""
    encoded = msgspec.json.encode(command)
    if isinstance(command, MakeTransfer) and encoded.endswith(_UNSET_REMOTE_PAYEE):
        # remote_payee (the last field) came later: left out while unset, fingerprints stored before it existed
        # still match.
        encoded = encoded[: -len(_UNSET_REMOTE_PAYEE)] + b"}"
    return hashlib.sha256(encoded).digest()[:16]


# ---- State the decisions need ----


@dataclass(slots=True)
class Account:
    id: str
    kind: str
    floor: int
    ceiling: int | None
    balance: int = 0
    closed: bool = False
    # A peer clearing account's neighbour origin.
    peer: str | None = None


@dataclass(slots=True)
class TransferRecord:
    id: str
    index: int
    fingerprint: bytes
    payer: str
    payee: str
    minutes: int
    reversed_by: str | None = None


@dataclass(slots=True)
class DecisionRecord:
    """A neighbour's transfer this network has decided (accepted or rejected), and where."""

    index: int
    fingerprint: bytes


@dataclass(slots=True)
class Replay:
    """A command whose idempotency key was already used: the answer is the original entry."""

    index: int


@dataclass(slots=True)
class Book:
    """The slice of ledger state one batch needs, mutated as the batch's commands are decided."""

    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, TransferRecord] = field(default_factory=dict)
    # Account opens by idempotency key: key -> (account id, fingerprint, index).
    opens: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)
    # Open peer clearing accounts by the neighbour's origin: one per neighbour.
    peers: dict[str, str] = field(default_factory=dict)
    # Decided neighbour transfers by (origin, neighbour's transfer id).
    decisions: dict[tuple[str, str], DecisionRecord] = field(default_factory=dict)
    default_floor: int = -600

    def account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise NotFound(f"account {account_id} does not exist", account=account_id) from None


def decide(book: Book, command: Command, *, at: datetime, index: int) -> LogEntry | Replay:
    """Decide one command against the book; on success apply it and return the new entry.

    ``index`` is the log index the entry will get. Refusals raise a DomainError and leave the book unchanged.
    """
    entry: LogEntry
    if isinstance(command, MakeTransfer):
        tid = transfer_id(command.key)
        existing = book.transfers.get(tid)
        if existing is not None:
            return _replay(existing.fingerprint, fingerprint(command), existing.index, command.key)
        if command.payer == command.payee:
            raise Invalid("payer and payee must be different accounts")
        entry = Transfer(
            at=at,
            id=tid,
            payer=command.payer,
            payee=command.payee,
            minutes=command.minutes,
            memo_digest=command.memo_digest,
            exchange_ref=command.exchange_ref,
            remote=_outgoing_remote(book, command),
        )
        _check_transfer(book, entry)
        book.transfers[tid] = TransferRecord(tid, index, fingerprint(command), entry.payer, entry.payee, entry.minutes)
    elif isinstance(command, Reverse):
        tid = transfer_id(command.key)
        existing = book.transfers.get(tid)
        if existing is not None:
            return _replay(existing.fingerprint, fingerprint(command), existing.index, command.key)
        original = book.transfers.get(command.transfer)
        if original is None:
            raise NotFound(f"transfer {command.transfer} does not exist", transfer=command.transfer)
        if original.reversed_by is not None:
            raise Conflict(
                f"transfer {original.id} was already reversed by {original.reversed_by}",
                reversed_by=original.reversed_by,
            )
        if book.account(original.payer).kind == "peer":
            # The neighbour decided it (or it undid our own payment the neighbour refused): taking it back
            # here would leave the two networks' clearing accounts disagreeing.
            raise Invalid(
                f"transfer {original.id} came from a peer clearing account and cannot be reversed; "
                "pay the minutes back with a new cross-network transfer",
                transfer=original.id,
            )
        entry = Transfer(
            at=at,
            id=tid,
            payer=original.payee,
            payee=original.payer,
            minutes=original.minutes,
            reverses=original.id,
        )
        _check_transfer(book, entry)
        original.reversed_by = tid
        book.transfers[tid] = TransferRecord(tid, index, fingerprint(command), entry.payer, entry.payee, entry.minutes)
    elif isinstance(command, DecideRemote):
        decided = _decide_remote(book, command, at, index)
        if isinstance(decided, Replay):
            return decided
        entry = decided
    elif isinstance(command, OpenAccount):
        known = book.opens.get(command.key)
        if known is not None:
            return _replay(known[1], fingerprint(command), known[2], command.key)
        if (command.kind == "peer") != (command.peer is not None):
            raise Invalid("a peer account names its peer network's origin, and only a peer account does")
        if command.peer is not None and command.peer in book.peers:
            existing_peer = book.peers[command.peer]
            raise Conflict(f"{command.peer} already has the clearing account {existing_peer}", account=existing_peer)
        floor = command.floor
        if floor is None:
            floor = book.default_floor if command.kind == "member" else 0
        _check_limits(floor, command.ceiling)
        entry = AccountOpened(
            at=at,
            account=new_account_id(),
            kind=command.kind,
            floor=floor,
            ceiling=command.ceiling,
            peer=command.peer,
        )
        book.opens[command.key] = (entry.account, fingerprint(command), index)
    elif isinstance(command, ChangeLimits):
        account = _open_account(book, command.account)
        _check_limits(command.floor, command.ceiling)
        entry = LimitsChanged(at=at, account=account.id, floor=command.floor, ceiling=command.ceiling)
    else:
        account = _open_account(book, command.account)
        if account.balance != 0:
            raise Conflict(
                f"account {account.id} still holds {account.balance} minutes; settle it before closing",
                balance=account.balance,
            )
        entry = AccountClosedEntry(at=at, account=account.id)
    apply(book, entry)
    return entry


def apply(book: Book, entry: LogEntry) -> None:
    """Fold one accepted entry into the book's account state."""
    if isinstance(entry, Transfer):
        book.accounts[entry.payer].balance -= entry.minutes
        book.accounts[entry.payee].balance += entry.minutes
    elif isinstance(entry, AccountOpened):
        book.accounts[entry.account] = Account(entry.account, entry.kind, entry.floor, entry.ceiling, peer=entry.peer)
        if entry.peer is not None:
            book.peers[entry.peer] = entry.account
    elif isinstance(entry, LimitsChanged):
        account = book.accounts[entry.account]
        account.floor, account.ceiling = entry.floor, entry.ceiling
    elif isinstance(entry, AccountClosedEntry):
        book.accounts[entry.account].closed = True
        book.peers = {origin: a for origin, a in book.peers.items() if a != entry.account}
    # A CrossnetRejected entry moves nothing.


def _outgoing_remote(book: Book, command: MakeTransfer) -> Remote | None:
    """The remote part of a transfer to a peer clearing account; None for a transfer inside the network."""
    payer, payee = book.account(command.payer), book.account(command.payee)
    if payer.kind == "peer":
        raise Invalid(
            f"account {payer.id} is a peer clearing account: it pays only by a cross-network decision",
            account=payer.id,
        )
    if payee.kind != "peer":
        if command.remote_payee is not None:
            raise Invalid("only a transfer to a peer clearing account names a remote payee", account=payee.id)
        return None
    if command.remote_payee is None:
        raise Invalid(
            f"account {payee.id} is a peer clearing account: name the remote payee in its network",
            account=payee.id,
        )
    assert payee.peer is not None
    return Remote(origin=payee.peer, account=command.remote_payee)


def _decide_remote(book: Book, command: DecideRemote, at: datetime, index: int) -> LogEntry | Replay:
    """Accept a neighbour's transfer (peer account -> payee) or record why not; a decision is made once."""
    key = (command.origin, command.transfer)
    given = fingerprint(command)
    known = book.decisions.get(key)
    if known is not None:
        if known.fingerprint != given:
            raise Conflict(
                f"{command.origin}'s transfer {command.transfer} was already decided, for a different request",
                origin=command.origin,
                transfer=command.transfer,
                index=known.index,
            )
        return Replay(known.index)
    peer_id = book.peers.get(command.origin)
    if peer_id is None:
        raise NotFound(f"{command.origin} has no open peer clearing account here", origin=command.origin)
    entry: LogEntry
    reason = _rejection(book, book.accounts[peer_id], command)
    if reason is None:
        tid = crossnet_transfer_id(command.origin, command.transfer)
        entry = Transfer(
            at=at,
            id=tid,
            payer=peer_id,
            payee=command.payee,
            minutes=command.minutes,
            memo_digest=command.memo_digest,
            remote=Remote(origin=command.origin, transfer=command.transfer, index=command.index),
        )
        book.transfers[tid] = TransferRecord(tid, index, given, peer_id, command.payee, command.minutes)
    else:
        entry = CrossnetRejected(
            at=at,
            origin=command.origin,
            transfer=command.transfer,
            index=command.index,
            payee=command.payee,
            minutes=command.minutes,
            reason=reason,
        )
    book.decisions[key] = DecisionRecord(index, given)
    return entry


def _rejection(book: Book, peer: Account, command: DecideRemote) -> RejectionReason | None:
    payee = book.accounts.get(command.payee)
    if payee is None:
        return "unknown_payee"
    if payee.kind != "member":
        return "not_a_member"
    if payee.closed:
        return "account_closed"
    if peer.balance - command.minutes < peer.floor:
        return "trust_limit"
    if payee.ceiling is not None and payee.balance + command.minutes > payee.ceiling:
        return "ceiling"
    return None


def _replay(stored: bytes, given: bytes, index: int, key: str) -> Replay:
    if stored != given:
        raise Conflict(f"idempotency key {key!r} was already used for a different request", key=key)
    return Replay(index)


def _open_account(book: Book, account_id: str) -> Account:
    account = book.account(account_id)
    if account.closed:
        raise AccountClosed(f"account {account_id} is closed", account=account_id)
    return account


def _check_limits(floor: int, ceiling: int | None) -> None:
    if floor > 0 or (ceiling is not None and ceiling < 0):
        raise Invalid("the floor must be <= 0 and the ceiling >= 0")


def _check_transfer(book: Book, transfer: Transfer) -> None:
    payer = _open_account(book, transfer.payer)
    payee = _open_account(book, transfer.payee)
    if payer.balance - transfer.minutes < payer.floor:
        raise InsufficientHours(
            f"account {payer.id} would fall below its floor of {payer.floor} minutes",
            account=payer.id,
            balance=payer.balance,
            floor=payer.floor,
        )
    if payee.ceiling is not None and payee.balance + transfer.minutes > payee.ceiling:
        raise InsufficientHours(
            f"account {payee.id} would rise above its ceiling of {payee.ceiling} minutes",
            account=payee.id,
            balance=payee.balance,
            ceiling=payee.ceiling,
        )
