"""What a verified batch of a neighbour's log asks of our ledger: the pure rules of cross-network settlement.

- A transfer in the neighbour's log paying one of our accounts (its ``remote.origin`` is us) is ours to decide:
  our ledger accepts it (paying the member from the neighbour's clearing account) or records why not.
- The neighbour's rejection of one of our transfers (``ledger.crossnet.rejected.v1`` naming us) means we reverse
  that transfer, giving the member back the minutes.
- The neighbour's acceptance of one of ours needs nothing: the minutes have arrived.

Each command carries the key it is sent under, so deciding or reversing twice is still done once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from services.ledger.entries import CrossnetRejected, Transfer, entry_decoder


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


Settlement = Decide | Reverse

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Settlement)


def settlements(ours: str, neighbour: str, start: int, entries: Sequence[bytes]) -> list[Settlement]:
    """The commands that the neighbour's entries ``start``.. (verified, as stored) ask of us, the log ``ours``."""
    found: list[Settlement] = []
    for offset, data in enumerate(entries):
        # Only the two entry types that can concern us are decoded fully; a newer neighbour's unknown types are
        # none of our business.
        if b'"ledger.transfer.v1"' not in data and b'"ledger.crossnet.rejected.v1"' not in data:
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
            case CrossnetRejected(origin=origin) if origin == ours:
                found.append(Reverse(origin=neighbour, transfer=entry.transfer, index=index, reason=entry.reason))
    return found
