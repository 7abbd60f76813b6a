"""The state a batch of ledger commands is decided on: the accounts, transfers, opens and cross-network decisions it
names, as the writer loaded or cached them. ``services.ledger.ledger`` decides on it and applies what it decides."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import NotFound


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
    # A peer clearing account: the minutes of our payments to the neighbour it has neither accepted nor had
    # reversed. They are in its balance, but count for nothing when deciding the neighbour's payments.
    in_flight: int = 0


@dataclass(slots=True)
class DecisionRecord:
    """A decision across networks recorded here, and where: ours on a neighbour's transfer (accepted or rejected),
    or the record of a neighbour's acceptance of ours."""

    index: int
    fingerprint: bytes


@dataclass(slots=True)
class TransferRecord:
    id: str
    index: int
    fingerprint: bytes
    payer: str
    payee: str
    minutes: int
    reversed_by: str | None = None
    # Our payment to a neighbour's member that the neighbour accepted: our record of its acceptance.
    accepted: DecisionRecord | None = None


@dataclass(frozen=True, slots=True)
class OpenRecord:
    """An account open already decided, by its idempotency key: the account, the command's fingerprint, where."""

    account: str
    fingerprint: bytes
    index: int


@dataclass(slots=True)
class Replay:
    """A command whose idempotency key was already used: the answer is the original entry."""

    index: int


@dataclass(slots=True)
class Book:
    """The slice of ledger state one batch needs, mutated as the batch's commands are decided."""

    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, TransferRecord] = field(default_factory=dict)
    # Account opens by idempotency key.
    opens: dict[str, OpenRecord] = field(default_factory=dict)
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
