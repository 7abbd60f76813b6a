"""What one batch of the ledger's writer appends or changes, as named rows the store sends as column arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec.structs import astuple

# Each row type's fields are the columns its statement fills, in order (a test holds them to queries.sql). They hold
# only strings, numbers and bytes (gc=False), and one is built per entry on the appender's hot path.


class NewAccountRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An account opened in the batch, with its limits and status as the batch leaves them."""

    id: str
    kind: str
    floor: int
    ceiling: int | None
    closed: bool
    peer: str | None
    opened_idx: int
    open_key: str
    open_fingerprint: bytes


class ChangedAccountRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An existing account whose limits changed or that was closed in the batch."""

    id: str
    floor: int
    ceiling: int | None
    closed: bool


class TransferRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A transfer, with the payer's and payee's balances after it."""

    id: str
    idx: int
    fingerprint: bytes
    payer: str
    payee: str
    minutes: int
    reverses: str | None
    payer_balance: int
    payee_balance: int


class DecisionRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A cross-network decision on a neighbour's transfer; ``reason`` is None when it was accepted."""

    origin: str
    transfer: str
    idx: int
    fingerprint: bytes
    reason: str | None


class AcceptanceRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The record of a neighbour's acceptance of our transfer: our entry ``idx``, its decision ``remote_idx``."""

    transfer: str
    origin: str
    idx: int
    remote_idx: int
    fingerprint: bytes


class InFlightRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A peer clearing account's minutes in flight after entry ``idx``."""

    account: str
    idx: int
    minutes: int


@dataclass(slots=True)
class BatchWrite:
    """Everything one batch appends or changes: entries from log index ``start``, leaving the log at ``size``
    with ``root`` and its signed ``checkpoint``; the rest as rows, sent as column arrays."""

    start: int
    size: int
    root: bytes = b""
    checkpoint: bytes = b""

    entry_data: list[bytes] = field(default_factory=list)
    new_accounts: list[NewAccountRow] = field(default_factory=list)
    changed_accounts: list[ChangedAccountRow] = field(default_factory=list)
    transfers: list[TransferRow] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    acceptances: list[AcceptanceRow] = field(default_factory=list)
    in_flight: list[InFlightRow] = field(default_factory=list)
    # (level, tile index, hashes), as the tree's right edge gives them.
    tiles: list[tuple[int, int, bytes]] = field(default_factory=list)


def columns(rows: Sequence[msgspec.Struct], row_type: type[msgspec.Struct]) -> Sequence[Sequence[Any]]:
    """The rows as one array per field, in the field order (the order of the statement's columns)."""
    if not rows:
        return [[] for _ in row_type.__struct_fields__]
    return list(zip(*map(astuple, rows), strict=True))


def tile_columns(rows: list[tuple[int, int, bytes]]) -> Sequence[Sequence[Any]]:
    """(level, tile index, hashes) rows as three arrays."""
    return list(zip(*rows, strict=True)) if rows else [[], [], []]
