"""What the ledger's HTTP API answers, as its client reads it, and what the client sends (``services.ledger.client``).

Tolerant of fields a newer ledger may add. ``OpenedAccount`` and ``PostedTransfer`` are also stored, inside the
exchange's outbox outcomes, under their ``exchange.ledger.*.v1`` tags: their tags and fields never change, so the
bytes already stored keep decoding (new fields would need defaults).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class OpenedAccount(msgspec.Struct, frozen=True, kw_only=True, tag="exchange.ledger.opened-account.v1"):
    """An account the ledger opened for a key (``replayed``: it had been opened before with that key).

    ``floor`` and ``ceiling`` are the account's limits when this answer was made.
    """

    account: str
    kind: str
    floor: int
    ceiling: int | None
    # Log index of the account's opening entry.
    index: int
    # Lets the member read their own balance and statement directly from the ledger.
    owner_token: str
    replayed: bool


class PostedTransfer(msgspec.Struct, frozen=True, kw_only=True, tag="exchange.ledger.posted-transfer.v1"):
    """A transfer in the ledger's log (``replayed``: the key had already posted it; this is the original)."""

    id: str
    index: int
    payer: str
    payee: str
    minutes: int
    memo_digest: str | None = None
    exchange_ref: str | None = None
    reverses: str | None = None
    at: datetime
    replayed: bool


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """An account's limits and balance."""

    id: str
    kind: str
    floor: int
    ceiling: int | None
    balance: int
    closed: bool
    peer: str | None = None
    opened_index: int
    # The log size the balance is taken at.
    as_of_size: int | None = None


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    """One posting on an account: the transfer, the other side, and the balance after it."""

    index: int
    transfer: str
    counterparty: str
    delta: int
    balance: int
    reverses: str | None = None
    memo_digest: str | None = None
    exchange_ref: str | None = None
    at: datetime


class StatementPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a statement, newest line first; pass ``next_before`` as ``before`` for the next page."""

    account: str
    lines: list[StatementLine]
    next_before: int | None = None


class LedgerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger's readiness and its log size."""

    status: str
    log_size: int


class RemoteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """This ledger's decision on a neighbour's transfer to one of its accounts (``replayed``: decided before)."""

    origin: str
    # The neighbour's transfer id and its index in the neighbour's log.
    transfer: str
    transfer_index: int
    payee: str
    minutes: int
    decision: Literal["accepted", "rejected"]
    # Why it was rejected.
    reason: str | None = None
    # The local transfer (peer account -> payee) when accepted.
    id: str | None = None
    # The decision's index in this ledger's log.
    index: int
    at: datetime
    replayed: bool = False


class RecordedAcceptance(msgspec.Struct, frozen=True, kw_only=True):
    """The record in this ledger's log of a neighbour's acceptance of its transfer (``replayed``: recorded before)."""

    origin: str
    transfer: str
    # The neighbour's decision's index in its log, and the record's index in this ledger's log.
    decision_index: int
    index: int
    at: datetime
    replayed: bool = False


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A log entry's exact stored bytes (sent as base64), which its Merkle leaf hashes."""

    index: int
    data: bytes


class Entries(msgspec.Struct, frozen=True, kw_only=True):
    """A run of consecutive log entries from ``start``."""

    start: int
    entries: list[Entry]


class CosignaturesRequest(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    signatures: list[str]


class SignedCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint the log signed when a batch committed: its size and the signed note's text."""

    size: int
    note: str


class Checkpoints(msgspec.Struct, frozen=True, kw_only=True):
    checkpoints: list[SignedCheckpoint]


class InclusionProof(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries (hashes decoded from base64)."""

    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    proof: list[bytes]


class ConsistencyProof(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9162 consistency proof between the trees of ``old`` and ``new`` entries."""

    old: int
    new: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """One account's balance in a ``Balances`` snapshot."""

    id: str
    kind: str
    balance: int


class Balances(msgspec.Struct, frozen=True, kw_only=True):
    """Every account's balance after the first ``size`` log entries."""

    size: int
    accounts: list[Balance]


class OpenedAccountBody(msgspec.Struct, kw_only=True):
    """The ledger's answer to opening an account (its account view, with the owner token)."""

    id: str
    kind: str
    floor: int
    ceiling: int | None
    opened_index: int
    owner_token: str


# ---- What the client sends (None fields are left out, so an older ledger still understands them) ----


class OpenAccountRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    key: str
    kind: str = "member"
    floor: int | None = None
    ceiling: int | None = None
    peer: str | None = None


class LimitsRequest(msgspec.Struct, frozen=True, kw_only=True):
    floor: int
    # Sent as null when absent: the ledger reads a missing ceiling as "none" too.
    ceiling: int | None = None


class TransferRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    key: str
    payer: str
    payee: str
    minutes: int
    memo_digest: str | None = None
    exchange_ref: str | None = None
    remote_payee: str | None = None


class ReverseRequest(msgspec.Struct, frozen=True, kw_only=True):
    key: str


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    origin: str
    transfer: str
    index: int
    payee: str
    minutes: int
    memo_digest: str | None = None


class DecideManyRequest(msgspec.Struct, frozen=True, kw_only=True):
    decisions: list[DecideRequest]


class DecisionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One decision's outcome in a batch: its status, and the decision or the problem the ledger answered."""

    status: int
    decision: RemoteDecision | None = None
    problem: dict[str, Any] | None = None


class DecisionOutcomes(msgspec.Struct, frozen=True, kw_only=True):
    results: list[DecisionOutcome]


class AcceptanceOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One acceptance record's outcome in a batch: its status, and the record or the problem the ledger answered."""

    status: int
    acceptance: RecordedAcceptance | None = None
    problem: dict[str, Any] | None = None


class AcceptanceOutcomes(msgspec.Struct, frozen=True, kw_only=True):
    results: list[AcceptanceOutcome]


class RecordManyRequest(msgspec.Struct, frozen=True, kw_only=True):
    acceptances: list[AcceptanceRequest]


class AcceptanceRequest(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    transfer: str
    index: int


class ReverseRejectedRequest(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    origin: str
    transfer: str
    index: int
