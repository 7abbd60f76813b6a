"""What neighbours send each other over NATS: msgspec Structs, tagged, encoded as MessagePack.

Federated types never forbid unknown fields (a neighbour may run a newer version) and evolve by adding fields
with defaults; a breaking change gets a new tag.
"""

from __future__ import annotations

import msgspec


class LogBatch(msgspec.Struct, frozen=True, kw_only=True, tag="timebank.log.batch.v1", tag_field="type"):
    """Consecutive entries ``start``.. of ``origin``'s log, as the log stored (and hashed) them.

    A batch that ends where one of the log's signed checkpoints ends carries that checkpoint note, so the
    receiver can verify every entry since the last checkpoint by recomputing the signed root.
    """

    origin: str
    start: int
    entries: list[bytes]
    checkpoint: bytes | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.entries)


FederatedMessage = LogBatch

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(FederatedMessage)


def message_id(batch: LogBatch) -> str:
    """The ``Nats-Msg-Id`` of a batch: its range, so a batch published twice is stored once."""
    return f"{batch.start}-{batch.end}"
