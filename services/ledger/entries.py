"""The ledger's log schema: the tagged ``ledger.*.v1`` entry types, their codec, and the ids they carry.

This is what is stored, hashed, signed and federated, and what an auditor or a neighbour reads; it imports only
msgspec and the standard library, so readers of the log need nothing of the ledger's decide logic or web layer.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Literal

import msgspec

AccountKind = Literal["member", "community", "peer"]

# A single transfer may move at most 1,000 hours; anything bigger is a typo, not a favour.
MAX_MINUTES = 60_000
# Balances and limits stay well inside PostgreSQL bigint and JavaScript's safe integers.
MAX_LIMIT = 10**12

ACCOUNT_ID_PATTERN = r"^acct_[0-9a-f]{20}$"
TRANSFER_ID_PATTERN = r"^tr_[0-9a-f]{32}$"
ORIGIN_PATTERN = r"^[A-Za-z0-9._/-]{1,200}$"

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


class CrossnetAccepted(Entry, frozen=True, kw_only=True, tag="ledger.crossnet.accepted.v1"):
    """The neighbour ``origin`` accepted our transfer ``transfer``: its decision is entry ``index`` of its log.

    It moves no minutes (they left when we paid); from here on they are settled, no longer in flight. Recorded from
    the neighbour's log by our federation, so an auditor holding both logs can pair it with that decision.
    """

    origin: str
    transfer: str
    index: int


LogEntry = AccountOpened | LimitsChanged | AccountClosedEntry | Transfer | CrossnetRejected | CrossnetAccepted

entry_encoder = msgspec.json.Encoder()
entry_decoder = msgspec.json.Decoder(LogEntry)


# ---- Ids ----


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
