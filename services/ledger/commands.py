"""What callers ask the ledger for: the command types (strict, unknown fields refused) and their fingerprints."""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from services.ledger.entries import (
    ACCOUNT_ID_PATTERN,
    MAX_LIMIT,
    MAX_MINUTES,
    ORIGIN_PATTERN,
    TRANSFER_ID_PATTERN,
    AccountKind,
)

Minutes = Annotated[int, msgspec.Meta(ge=1, le=MAX_MINUTES)]
Floor = Annotated[int, msgspec.Meta(ge=-MAX_LIMIT, le=0)]
Ceiling = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]
AccountId = Annotated[str, msgspec.Meta(pattern=ACCOUNT_ID_PATTERN)]
TransferId = Annotated[str, msgspec.Meta(pattern=TRANSFER_ID_PATTERN)]
# Keys and references are printable text: no control characters (PostgreSQL text cannot even hold NUL).
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Origin = Annotated[str, msgspec.Meta(pattern=ORIGIN_PATTERN)]
# An index in a (neighbour's) log.
LogIndex = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


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


class RecordAcceptance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Record that the neighbour ``origin`` accepted our transfer ``transfer`` (its decision is entry ``index`` of
    its log), as read from the neighbour's log."""

    origin: Origin
    transfer: TransferId
    index: LogIndex


class ReverseRejected(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Reverse our transfer ``transfer``, which the neighbour ``origin`` rejected (entry ``index`` of its log)."""

    key: Key
    origin: Origin
    transfer: TransferId
    index: LogIndex


Command = (
    OpenAccount
    | ChangeLimits
    | CloseAccount
    | MakeTransfer
    | Reverse
    | DecideRemote
    | RecordAcceptance
    | ReverseRejected
)


_UNSET_REMOTE_PAYEE = b',"remote_payee":null}'


def fingerprint(command: Command) -> bytes:
    """What a replayed key must match: the whole command, canonically encoded."""
    if type(command) is ReverseRejected:
        # Until the federation had its own route, it reversed rejected payments as a plain Reverse under the same
        # key: the same two fields keep those reversals' stored fingerprints matching.
        command = Reverse(key=command.key, transfer=command.transfer)
    encoded = msgspec.json.encode(command)
    if isinstance(command, MakeTransfer) and encoded.endswith(_UNSET_REMOTE_PAYEE):
        # remote_payee (the last field) came later: left out while unset, fingerprints stored before it existed
        # still match.
        encoded = encoded[: -len(_UNSET_REMOTE_PAYEE)] + b"}"
    return hashlib.sha256(encoded).digest()[:16]
