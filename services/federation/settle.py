"""What a verified batch of a neighbour's log asks of our ledger, and the steps of our payments to neighbours that
the two logs show: the pure rules of cross-network settlement.

- A transfer in the neighbour's log paying one of our accounts (its ``remote.origin`` is us) is ours to decide:
  our ledger accepts it (paying the member from the neighbour's clearing account) or records why not.
- The neighbour's rejection of one of our transfers (``ledger.crossnet.rejected.v1`` naming us) means we reverse
  that transfer, giving the member back the minutes.
- The neighbour's acceptance of one of ours is recorded in our ledger: its minutes are settled from then on, no
  longer in flight, and count when our ledger decides the neighbour's payments.

Each command carries the key it is sent under, so deciding or reversing twice is still done once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import msgspec

from services.ledger.entries import CrossnetRejected, LogEntry, Transfer, entry_decoder


class Decide(msgspec.Struct, frozen=True, kw_only=True, tag="federation.settle.decide.v1", tag_field="type"):
    """Have our ledger decide the neighbour ``origin``'s transfer at ``index`` of its log."""

    origin: str
    transfer: str
    index: int
    payee: str
    minutes: int
    memo_digest: str | None = None

    @property
    def key(self) -> str:
        return f"decide {self.origin} {self.transfer}"


class Reverse(msgspec.Struct, frozen=True, kw_only=True, tag="federation.settle.reverse.v1", tag_field="type"):
    """Reverse our transfer ``transfer``, which the neighbour ``origin`` rejected (at ``index`` of its log)."""

    origin: str
    transfer: str
    index: int
    reason: str

    @property
    def key(self) -> str:
        return f"reverse {self.transfer}"


class Accept(msgspec.Struct, frozen=True, kw_only=True, tag="federation.settle.accept.v1", tag_field="type"):
    """Record in our ledger that the neighbour ``origin`` accepted our transfer ``transfer`` (at ``index`` of its
    log)."""

    origin: str
    transfer: str
    index: int

    @property
    def key(self) -> str:
        return f"accept {self.transfer}"


Settlement = Decide | Reverse | Accept


class CrossnetEvent(msgspec.Struct, frozen=True):
    """One step of one of our payments to a neighbour: sent, accepted, rejected or reversed."""

    transfer: str
    kind: str
    peer: str
    minutes: int
    index: int


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Settlement)


# Entries of our own log that can matter across networks hold one of these (the full decode then decides).
_MAYBE_CROSSNET = re.compile(rb'"remote"|"reverses"')


def _crossnet(start: int, entries: Sequence[bytes]) -> Iterator[tuple[int, LogEntry]]:
    """The entries of our own log that can matter across networks (payments to neighbours, reversals), decoded."""
    for offset, data in enumerate(entries):
        # A cheap look first: most entries are local transfers.
        if _MAYBE_CROSSNET.search(data) is None:
            continue
        try:
            yield start + offset, entry_decoder.decode(data)
        except msgspec.DecodeError:
            continue


def from_neighbour(
    ours: str, neighbour: str, start: int, entries: Sequence[bytes]
) -> tuple[list[Settlement], list[CrossnetEvent]]:
    """What the neighbour's entries ``start``.. (verified, as stored) mean for us, the log ``ours``: the commands
    they ask of our ledger (its payments to our members to decide, its rejections of ours to reverse, its
    acceptances of ours to record), and its answers to our payments (acceptances and rejections)."""
    found: list[Settlement] = []
    answers: list[CrossnetEvent] = []
    # Every entry that concerns us names our origin: one substring search skips the rest.
    needle = msgspec.json.encode(ours)
    for offset, data in enumerate(entries):
        if needle not in data:
            continue
        try:
            entry = entry_decoder.decode(data)
        except msgspec.DecodeError:
            continue
        index = start + offset
        match entry:
            case Transfer(remote=remote) if remote is not None and remote.origin == ours and remote.account:
                found.append(
                    Decide(
                        origin=neighbour,
                        transfer=entry.id,
                        index=index,
                        payee=remote.account,
                        minutes=entry.minutes,
                        memo_digest=entry.memo_digest,
                    )
                )
            case Transfer(remote=remote) if remote is not None and remote.origin == ours and remote.transfer:
                found.append(Accept(origin=neighbour, transfer=remote.transfer, index=index))
                answers.append(CrossnetEvent(remote.transfer, "accepted", neighbour, entry.minutes, index))
            case CrossnetRejected(origin=origin) if origin == ours:
                found.append(Reverse(origin=neighbour, transfer=entry.transfer, index=index, reason=entry.reason))
                answers.append(CrossnetEvent(entry.transfer, "rejected", neighbour, entry.minutes, index))
    return found, answers


def our_steps(start: int, entries: Sequence[bytes]) -> list[CrossnetEvent]:
    """From our own log: payments we sent to neighbours' members, and reversals (of any transfer: a reversal does
    not say whom the original paid, and recording one that was not cross-network is harmless)."""
    steps = []
    for index, entry in _crossnet(start, entries):
        if not isinstance(entry, Transfer):
            continue
        if entry.remote is not None and entry.remote.account is not None:
            steps.append(CrossnetEvent(entry.id, "sent", entry.remote.origin, entry.minutes, index))
        elif entry.reverses is not None:
            steps.append(CrossnetEvent(entry.reverses, "reversed", "", entry.minutes, index))
    return steps
