"""Publishing our log to our JetStream stream, from the ledger (PostgreSQL is the source of truth).

The publisher walks the ledger's signed checkpoints in order and sends the entries up to each as batches: one
message per run of entries within one 256-entry bundle, and the message that ends at the checkpoint carries it,
so a neighbour verifies each ledger batch against the root the log signed. A message's ``Nats-Msg-Id`` is its
range, so a batch sent twice is stored once, and a restarted publisher resumes from the end of the last batch
the stream holds: whatever it sends again is a duplicate that JetStream or the receiver drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.federation import metrics, names, store, wire
from services.federation.settle import our_steps
from services.ledger.client import LedgerClient, SignedCheckpoint

log = logging.getLogger(__name__)

# Entries per C2SP entry bundle: a batch never crosses a bundle's end, so message ranges line up with tiles.
BUNDLE = 256
# Entry bundles read from the ledger at once.
READ_AT_ONCE = 32
# Checkpoints (the ledger's batches) read and published in one round.
ROUND = 64
# How long JetStream remembers message ids to drop a republished batch.
DUPLICATE_WINDOW_SECONDS = 120.0
# A neighbour acknowledges a batch once it stored it verified; unacknowledged batches come again after this.
ACK_WAIT_SECONDS = 30.0
# Batches a neighbour may hold unacknowledged: those since the last checkpoint it could verify, and some ahead.
MAX_ACK_PENDING = 4096


def split(start: int, entries: list[bytes], checkpoint: bytes, origin: str) -> list[wire.LogBatch]:
    """The batches that carry ``entries`` (from ``start``): cut at bundle ends, the checkpoint on the last."""
    batches = []
    at = 0
    while at < len(entries):
        index = start + at
        take = min(BUNDLE - index % BUNDLE, len(entries) - at)
        last = at + take == len(entries)
        batches.append(
            wire.LogBatch(
                origin=origin, start=index, entries=entries[at : at + take], checkpoint=checkpoint if last else None
            )
        )
        at += take
    return batches


@dataclass(frozen=True, slots=True)
class _Round:
    """What one round publishes: the entries from ``start`` up to the last of ``checkpoints``."""

    start: int
    checkpoints: list[SignedCheckpoint]
    entries: list[bytes]

    @property
    def end(self) -> int:
        return self.checkpoints[-1].size if self.checkpoints else self.start


class Publisher:
    """Copies the ledger's log, checkpoint by checkpoint, into our log stream."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: LedgerClient,
        js: JetStreamContext,
        *,
        origin: str,
        name: str,
        poll: float,
        replicas: int = 1,
    ) -> None:
        """``replicas``: copies JetStream keeps of our log stream (3 on a 3-node cluster)."""
        self._pool = pool
        self._ledger = ledger
        self._js = js
        self._origin = origin
        self._stream = names.log_stream(name)
        self._subject = names.log_subject(name)
        self._poll = poll
        self._replicas = replicas
        # Entries [0, published) are in the stream.
        self.published = 0
        self._listeners: list[asyncio.Event] = []

    async def prepare(self) -> None:
        """Make sure the stream exists, and resume after the last batch it holds."""
        config = StreamConfig(
            name=self._stream,
            subjects=[self._subject],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=self._replicas,
        )
        try:
            info = await self._js.stream_info(self._stream)
        except NotFoundError:
            await self._js.add_stream(config)
        else:
            if (info.config.num_replicas or 1) < self._replicas:  # a cluster grown since: keep more copies
                await self._js.update_stream(config)
        try:
            last = await self._js.get_last_msg(self._stream, self._subject)
        except NotFoundError:
            self.published = 0
            return
        self.published = wire.decoder.decode(last.data or b"").end

    async def offer_to(self, peers: list[str]) -> None:
        """Make sure each neighbour has its durable consumer of our log (the one its credential may read)."""
        for peer in peers:
            await self._js.add_consumer(
                self._stream,
                ConsumerConfig(
                    durable_name=names.peer_consumer(peer),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=ACK_WAIT_SECONDS,
                    max_ack_pending=MAX_ACK_PENDING,
                ),
            )

    def subscribe(self) -> asyncio.Event:
        """An event set whenever newly signed checkpoints have been published (for the cosignature collectors)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    async def run(self) -> None:
        """Publish forever: every newly signed checkpoint's entries as soon as the ledger has signed it (the ledger
        holds our question until its log grows, up to ``poll`` seconds). The next round is read from the ledger
        while this one is sent."""
        await self.prepare()
        ahead: asyncio.Task[_Round] | None = None
        try:
            while True:
                try:
                    if ahead is None:
                        ahead = asyncio.create_task(self._next_round(self.published, self._poll))
                    round_, ahead = await ahead, None
                    if round_.checkpoints:
                        ahead = asyncio.create_task(self._next_round(round_.end, self._poll))
                        await self._send(round_)
                except Exception:
                    log.exception("publishing the log failed; trying again")
                    if ahead is not None:  # read on top of a round that was not sent
                        ahead.cancel()
                        with contextlib.suppress(BaseException):
                            await ahead
                        ahead = None
                    await asyncio.sleep(self._poll)
        finally:
            if ahead is not None:
                ahead.cancel()

    async def publish_new(self, limit: int = ROUND, *, wait: float = 0.0) -> int:
        """Publish up to ``limit`` checkpoints' worth of new entries; the number of entries sent. With ``wait``,
        wait up to that long for the ledger to sign a new checkpoint when there is none."""
        round_ = await self._next_round(self.published, wait, limit)
        if round_.checkpoints:
            await self._send(round_)
        return round_.end - round_.start

    async def _next_round(self, after: int, wait: float, limit: int = ROUND) -> _Round:
        """The checkpoints signed after ``after`` (up to ``limit``) and the entries they add."""
        checkpoints = await self._ledger.checkpoints(after, limit, wait=wait)
        if not checkpoints:
            return _Round(after, [], [])
        return _Round(after, checkpoints, await self._read(after, checkpoints[-1].size))

    async def _send(self, round_: _Round) -> None:
        """Send a round's batches, all before their acknowledgements are awaited: one round trip for the round
        rather than one per checkpoint."""
        if round_.start != self.published:
            raise RuntimeError(f"a round read from {round_.start:,} cannot follow {self.published:,}")
        start, entries = round_.start, round_.entries
        steps = our_steps(start, entries)
        if steps:  # our payments to neighbours' members, to follow until they are answered
            async with self._pool.acquire() as conn:
                await store.record_crossnet(conn, steps)
        acks = []
        at = start
        for checkpoint in round_.checkpoints:
            for batch in split(
                at, entries[at - start : checkpoint.size - start], checkpoint.note.encode(), self._origin
            ):
                data = wire.encoder.encode(batch)
                acks.append(
                    await self._js.publish_async(self._subject, data, headers={"Nats-Msg-Id": wire.message_id(batch)})
                )
            at = checkpoint.size
        await asyncio.gather(*acks)
        self.published = round_.end
        metrics.PUBLISHED_SIZE.set(round_.end)
        for event in self._listeners:
            event.set()

    async def _read(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) from the ledger, as C2SP entry bundles (binary: no JSON or base64 on the way), a
        few bundles at a time."""
        bundles = [(n, min(BUNDLE, end - n * BUNDLE)) for n in range(start // BUNDLE, (end - 1) // BUNDLE + 1)]
        entries: list[bytes] = []
        for window in range(0, len(bundles), READ_AT_ONCE):
            chunk = bundles[window : window + READ_AT_ONCE]
            read = await asyncio.gather(*(self._ledger.entry_bundle(n, width) for n, width in chunk))
            for (n, width), bundle in zip(chunk, read, strict=True):
                if len(bundle) != width:
                    raise RuntimeError(f"the ledger's entry bundle {n} holds {len(bundle)} entries, not {width}")
                entries.extend(bundle[max(0, start - n * BUNDLE) :])
        return entries
