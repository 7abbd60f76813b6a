"""The ledger's pure domain: decide/apply on the state a batch needs (``services.ledger.book``, re-exported here).

Nothing here talks to a database or the network. The appender loads the few accounts and transfers a batch
touches into a ``Book``, calls ``decide`` for each command in order (which applies the accepted entry to the
book, so later commands in the same batch see its effect), and writes what was decided. The entry types are in
``services.ledger.entries``, the commands in ``services.ledger.commands``.
"""

from __future__ import annotations

from datetime import datetime

from services.ledger.book import Account, Book, DecisionRecord, OpenRecord, Replay, TransferRecord
from services.ledger.commands import (
    ChangeLimits,
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
    AccountClosedEntry,
    AccountOpened,
    CrossnetAccepted,
    CrossnetRejected,
    LimitsChanged,
    LogEntry,
    RejectionReason,
    Remote,
    Transfer,
    crossnet_transfer_id,
    new_account_id,
    transfer_id,
)
from shared.errors import AccountClosed, Conflict, Forbidden, InsufficientHours, Invalid, NotFound

__all__ = [
    "Account",
    "Book",
    "DecisionRecord",
    "OpenRecord",
    "Replay",
    "TransferRecord",
    "apply",
    "decide",
    "in_flight_changed",
]


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
    elif isinstance(command, Reverse | ReverseRejected):
        tid = transfer_id(command.key)
        existing = book.transfers.get(tid)
        if existing is not None:
            return _replay(existing.fingerprint, fingerprint(command), existing.index, command.key)
        original = _reversible(book, command)
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
    elif isinstance(command, RecordAcceptance):
        recorded = _record_acceptance(book, command, at, index)
        if isinstance(recorded, Replay):
            return recorded
        entry = recorded
    elif isinstance(command, DecideRemote):
        decided = _decide_remote(book, command, at, index)
        if isinstance(decided, Replay):
            return decided
        entry = decided
    elif isinstance(command, OpenAccount):
        known = book.opens.get(command.key)
        if known is not None:
            return _replay(known.fingerprint, fingerprint(command), known.index, command.key)
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
        book.opens[command.key] = OpenRecord(account=entry.account, fingerprint=fingerprint(command), index=index)
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
        if account.in_flight:
            # Their reversal (if the neighbour rejects them) must still find the clearing account open.
            raise Conflict(
                f"account {account.id} has {account.in_flight} minutes in flight to {account.peer}; "
                "wait until the neighbour has decided them",
                in_flight=account.in_flight,
            )
        entry = AccountClosedEntry(at=at, account=account.id)
    apply(book, entry)
    return entry


def apply(book: Book, entry: LogEntry) -> None:
    """Fold one accepted entry into the book's account state."""
    if isinstance(entry, Transfer):
        book.accounts[entry.payer].balance -= entry.minutes
        book.accounts[entry.payee].balance += entry.minutes
        # A transfer inside the network (the common case) is neither remote nor a reversal.
        if entry.remote is not None or entry.reverses is not None:
            _apply_in_flight(book, entry)
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
    elif isinstance(entry, CrossnetAccepted):
        accepted = book.transfers[entry.transfer]
        book.accounts[accepted.payee].in_flight -= accepted.minutes
    # A CrossnetRejected entry moves nothing.


def _apply_in_flight(book: Book, entry: Transfer) -> None:
    if entry.remote is not None and entry.remote.account is not None:
        book.accounts[entry.payee].in_flight += entry.minutes  # our payment out: in flight until accepted
    elif entry.reverses is not None and book.accounts[entry.payer].kind == "peer":
        book.accounts[entry.payer].in_flight -= entry.minutes  # a payment out the neighbour rejected, undone


def in_flight_changed(book: Book, entry: LogEntry) -> str | None:
    """The peer clearing account whose minutes in flight ``entry`` (just applied) changed, if any."""
    if isinstance(entry, Transfer):
        if entry.remote is not None and entry.remote.account is not None:
            return entry.payee
        if entry.reverses is not None and book.accounts[entry.payer].kind == "peer":
            return entry.payer
        return None
    if isinstance(entry, CrossnetAccepted):
        return book.transfers[entry.transfer].payee
    return None


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


def _reversible(book: Book, command: Reverse | ReverseRejected) -> TransferRecord:
    """The transfer ``command`` may reverse: a plain reversal undoes a transfer inside the network; only the
    federation's (``ReverseRejected``) undoes one of our payments to a neighbour, once it has rejected it."""
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
    payee = book.account(original.payee)
    if isinstance(command, Reverse):
        if payee.kind == "peer":
            # While the neighbour has not decided it, it may still accept it: reversed as well, it would be paid
            # twice. Only the neighbour's rejection, read by the federation, undoes it.
            raise Forbidden(
                f"transfer {original.id} pays a member of {payee.peer}: only the federation reverses it, "
                f"once {payee.peer} has rejected it",
                transfer=original.id,
            )
        return original
    _check_ours(payee, original, command.origin)
    if original.accepted is not None:
        raise Conflict(
            f"{command.origin} accepted transfer {original.id} (our entry {original.accepted.index}); "
            "it cannot also have rejected it",
            transfer=original.id,
            accepted=original.accepted.index,
        )
    return original


def _check_ours(payee: Account, original: TransferRecord, origin: str) -> None:
    if payee.kind != "peer" or payee.peer != origin:
        raise Invalid(f"transfer {original.id} is no payment of ours to a member of {origin}", transfer=original.id)


def _record_acceptance(book: Book, command: RecordAcceptance, at: datetime, index: int) -> LogEntry | Replay:
    """Record the neighbour's acceptance of our payment to its member, once: its minutes are settled from here."""
    given = fingerprint(command)
    original = book.transfers.get(command.transfer)
    if original is None:
        raise NotFound(f"transfer {command.transfer} does not exist", transfer=command.transfer)
    if original.accepted is not None:
        if original.accepted.fingerprint != given:
            raise Conflict(
                f"the acceptance of transfer {original.id} was already recorded, for a different request",
                transfer=original.id,
                index=original.accepted.index,
            )
        return Replay(original.accepted.index)
    if book.account(original.payer).kind == "peer":
        raise Invalid(f"transfer {original.id} is no payment of ours to a member of {command.origin}")
    _check_ours(book.account(original.payee), original, command.origin)
    if original.reversed_by is not None:
        raise Conflict(
            f"transfer {original.id} was reversed by {original.reversed_by} (rejected by {command.origin}); "
            "it cannot also have been accepted",
            transfer=original.id,
            reversed_by=original.reversed_by,
        )
    original.accepted = DecisionRecord(index, given)
    return CrossnetAccepted(at=at, origin=command.origin, transfer=command.transfer, index=command.index)


def _rejection(book: Book, peer: Account, command: DecideRemote) -> RejectionReason | None:
    payee = book.accounts.get(command.payee)
    if payee is None:
        return "unknown_payee"
    if payee.kind != "member":
        return "not_a_member"
    if payee.closed:
        return "account_closed"
    # Only settled minutes count: our payments still in flight may yet be rejected, and their reversal must then
    # find the minutes there.
    if peer.balance - peer.in_flight - command.minutes < peer.floor:
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
