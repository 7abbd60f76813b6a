"""Publishing our log to our JetStream stream, from the ledger (PostgreSQL is the source of truth).

The publisher walks the ledger's signed checkpoints in order and sends the entries up to each as batches: one
message per run of entries within one 256-entry bundle, and the message that ends at the checkpoint carries it,
so a neighbour verifies each ledger batch against the root the log signed. A message's ``Nats-Msg-Id`` is its
range, so a batch sent twice is stored once, and a restarted publisher resumes from the end of the last batch
the stream holds: whatever it sends again is a duplicate that JetStream or the receiver drops.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.federation import metrics, names, store, wire
from services.federation.settle import our_steps
from services.ledger.client import LedgerClient

log = logging.getLogger(__name__)

# Entries per C2SP entry bundle: a batch never crosses a bundle's end, so message ranges line up with tiles.
BUNDLE = 256
# Entries the ledger serves per read.
READ = 1000
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


class Publisher:
    """Copies the ledger's log, checkpoint by checkpoint, into our log stream."""

    def __init__(
        self, pool: asyncpg.Pool, ledger: LedgerClient, js: JetStreamContext, *, origin: str, name: str, poll: float
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._js = js
        self._origin = origin
        self._stream = names.log_stream(name)
        self._subject = names.log_subject(name)
        self._poll = poll
        # Entries [0, published) are in the stream.
        self.published = 0

    async def prepare(self) -> None:
        """Make sure the stream exists, and resume after the last batch it holds."""
        config = StreamConfig(
            name=self._stream,
            subjects=[self._subject],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await self._js.stream_info(self._stream)
        except NotFoundError:
            await self._js.add_stream(config)
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

    async def run(self) -> None:
        """Publish forever: every newly signed checkpoint's entries, then wait a moment while the log is quiet."""
        await self.prepare()
        while True:
            try:
                sent = await self.publish_new()
            except Exception:
                log.exception("publishing the log failed; trying again")
                sent = 0
            if not sent:
                await asyncio.sleep(self._poll)

    async def publish_new(self, limit: int = 64) -> int:
        """Publish up to ``limit`` checkpoints' worth of new entries; the number of entries sent."""
        sent = 0
        for checkpoint in await self._ledger.checkpoints(self.published, limit):
            entries: list[bytes] = []
            while self.published + len(entries) < checkpoint.size:
                start = self.published + len(entries)
                page = await self._ledger.entries(start, min(checkpoint.size, start + READ))
                if not page.entries:
                    raise RuntimeError(f"the ledger signed {checkpoint.size:,} entries but serves none from {start:,}")
                entries.extend(entry.data for entry in page.entries)
            steps = our_steps(self.published, entries)
            if steps:  # our payments to neighbours' members, to follow until they are answered
                async with self._pool.acquire() as conn:
                    await store.record_crossnet(conn, steps)
            batches = split(self.published, entries, checkpoint.note.encode(), self._origin)
            acks = [
                await self._js.publish_async(
                    self._subject,
                    wire.encoder.encode(batch),
                    headers={"Nats-Msg-Id": wire.message_id(batch)},
                )
                for batch in batches
            ]
            await asyncio.gather(*acks)
            self.published = checkpoint.size
            metrics.PUBLISHED_SIZE.set(self.published)
            sent += len(entries)
        return sent
