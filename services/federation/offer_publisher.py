"""Our shared offers, published: the exchange's listings that members share, as signed values in our offers bucket.

The exchange's events are the source (read through its seam, ``services/exchange/neighbour_offers.py``): every
listing touched by an event since the last value we wrote is written again as it is now, an offer while it is
shared and active, a tombstone once it is not. The bucket keeps the last value per listing (history 1), and every
value carries the position of the event that made it, so after a restart we resume from the largest position in
the bucket. Nothing is lost in a crash: the events are in PostgreSQL, and a value written twice is the same value.
Expiry makes no event, so the values whose expiry has passed are swept into tombstones here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from services.exchange import neighbour_offers
from services.federation import names
from services.federation.offers_wire import MAX_VALUE_BYTES, Offer, OfferWithdrawn, peek, seal
from shared.note import Signer

log = logging.getLogger(__name__)

# Listings read per round.
PAGE = 500
# Positions are taken by transactions before they commit, so one may become visible after a later one: every round
# reads again this far back (values that did not change are not written again).
OVERLAP = 1000


class OfferPublisher:
    """Keeps our offers bucket equal to what members share now."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        *,
        origin: str,
        name: str,
        signer: Signer,
        poll: float = 1.0,
        replicas: int = 1,
    ) -> None:
        self._pool = pool
        self._js = js
        self._origin = origin
        self._name = name
        self._bucket = names.offers_bucket(name)
        self._signer = signer
        self._poll = poll
        self._replicas = replicas
        self._kv: KeyValue | None = None
        # Each listing's last value in the bucket (a digest), and the expiry of those whose last value is an offer.
        self._written: dict[str, bytes] = {}
        self._expires: dict[str, datetime] = {}
        self.position = 0

    async def prepare(self) -> None:
        """Open (or make) our bucket and read back what it holds."""
        try:
            self._kv = await self._js.key_value(self._bucket)
            stream = names.offers_stream(self._name)
            info = await self._js.stream_info(stream)
            if (info.config.num_replicas or 1) < self._replicas:  # a cluster grown since: keep more copies
                await self._js.update_stream(replace(info.config, num_replicas=self._replicas))
        except BucketNotFoundError:
            self._kv = await self._js.create_key_value(
                bucket=self._bucket,
                history=1,
                max_value_size=MAX_VALUE_BYTES,
                description="timebank shared offers",
                replicas=self._replicas,
            )
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    self._remember(entry.key, entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    def _remember(self, listing: str, value: bytes) -> None:
        self._written[listing] = hashlib.sha256(value).digest()
        envelope = peek(value)
        if envelope is None:
            return
        self.position = max(self.position, envelope.seq)
        if isinstance(envelope, Offer):
            self._expires[listing] = envelope.expires
        else:
            self._expires.pop(listing, None)

    async def run(self) -> None:
        """Publish forever (after ``prepare``): new changes every ``poll`` seconds, and tombstones for offers that
        expired."""
        while True:
            try:
                await self.publish_new()
                await self.sweep()
            except Exception:
                log.exception("publishing our shared offers failed; trying again")
            await asyncio.sleep(self._poll)

    async def publish_new(self) -> None:
        """Write every listing touched since our position (and a little before it) as it is now."""
        cursor = max(0, self.position - OVERLAP)
        async with self._pool.acquire() as conn:
            if not await neighbour_offers.ready(conn):
                return
            # Read first: a round that saw no listing change still moves our position past the events it looked at
            # (exchanges, payments), so that the next round does not look at them again.
            head = await neighbour_offers.head(conn)
        while True:
            async with self._pool.acquire() as conn:
                rows = await neighbour_offers.changes(conn, cursor, PAGE)
            for row in rows:
                await self._publish(row)
            if len(rows) < PAGE:
                self.position = max(self.position, head, rows[-1].seq if rows else 0)
                return
            # One event can touch several listings (a member's): the next page starts at the last one's position.
            cursor = rows[-1].seq - 1 if rows[-1].seq - 1 > cursor else rows[-1].seq
            self.position = max(self.position, cursor)

    async def _publish(self, row: neighbour_offers.SharedListing) -> None:
        if row.shown:
            envelope: Offer | OfferWithdrawn = Offer(
                origin=self._origin,
                listing=row.listing,
                seq=row.seq,
                kind=row.kind,
                category=row.category,
                title=row.title,
                text=row.description,
                area=row.area,
                member_name=row.member_name,
                expires=row.expires,
            )
        elif row.listing in self._expires:
            envelope = OfferWithdrawn(origin=self._origin, listing=row.listing, seq=row.seq)
        else:
            # Never shared (nothing of it crosses, not even a tombstone), or its tombstone is written already.
            return
        await self._put(envelope)

    async def sweep(self) -> None:
        """Tombstones for the offers whose expiry has passed."""
        now = datetime.now(UTC)
        for listing, expires in list(self._expires.items()):
            if expires <= now:
                await self._put(OfferWithdrawn(origin=self._origin, listing=listing, seq=self.position))

    async def _put(self, envelope: Offer | OfferWithdrawn) -> None:
        assert self._kv is not None
        value = seal(envelope, self._signer)
        if self._written.get(envelope.listing) == hashlib.sha256(value).digest():
            return
        await self._kv.put(envelope.listing, value)
        self._remember(envelope.listing, value)
