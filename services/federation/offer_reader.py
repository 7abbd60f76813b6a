"""A neighbour's shared offers, read: its offers bucket, through the durable consumer it made for us, verified
against its log key and handed to the exchange (``services/exchange/neighbour_offers.py``) to show in our search.

A value that is not the neighbour's (signature), not well formed, claims another origin, or sits under another
listing's key is refused: counted by reason (``offer-*``, in the federation's status and metrics), logged, and
terminated on the stream. While the neighbour has open fork evidence its offers are hidden from search and its
bucket is not read; once a coordinator resolves the evidence they show again and reading resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.exchange import neighbour_offers
from services.federation import access, links, metrics, names, store
from services.federation.offers_wire import Offer, OfferRefused, read
from services.federation.peers import Peer

log = logging.getLogger(__name__)

FETCH = 256
FETCH_WAIT_SECONDS = 1.0
# How often a reader that may not read (no exchange here yet, open fork evidence) looks again.
IDLE_SECONDS = 1.0
KV_OPERATION = "KV-Operation"


async def offer_to(js: JetStreamContext, our_name: str, peer: str) -> None:
    """Make sure the neighbour ``peer`` has its durable consumer of our offers bucket (the only one its credential
    may read): the last value of every listing, then each new one."""
    await js.add_consumer(
        names.offers_stream(our_name),
        ConsumerConfig(
            durable_name=names.peer_consumer(peer),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            filter_subject=f"$KV.{names.offers_bucket(our_name)}.>",
            ack_wait=30,
        ),
    )


async def withdraw_from(js: JetStreamContext, our_name: str, peer: str) -> None:
    """The neighbour's consumer of our offers goes with the peering."""
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(names.offers_stream(our_name), names.peer_consumer(peer))


async def forget(pool: asyncpg.Pool, origin: str) -> None:
    """A removed neighbour's offers leave our search."""
    async with pool.acquire() as conn:
        if await neighbour_offers.ready(conn):
            await neighbour_offers.forget(conn, origin)


class OfferReader:
    """Follows one neighbour's offers bucket into our search."""

    def __init__(self, pool: asyncpg.Pool, peer: Peer, *, our_name: str) -> None:
        self._pool = pool
        self._peer = peer
        self._our_name = our_name
        self._prefix = f"$KV.{names.offers_bucket(peer.name)}."
        # Whether the neighbour's offers are hidden for its evidence (None: not known since we started).
        self._hidden: bool | None = None

    async def run(self) -> None:
        """Read forever, reconnecting to the neighbour's server whenever it is lost."""
        failures = 0
        while True:
            try:
                may_read = await self._may_read()
            except Exception:
                log.exception("cannot tell whether to read %s's offers; trying again", self._peer.origin)
                may_read = False
            if not may_read:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            try:
                nc = await links.connect(self._peer, self._our_name, "offers")
            except Exception as exc:
                failures += 1
                wait = links.retry_wait(failures)
                log.info("cannot reach %s's NATS for its offers (%s); retrying in %.1f s", self._peer.origin, exc, wait)
                await asyncio.sleep(wait)
                continue
            try:
                await self._follow(nc)
                failures = 0
            except Exception as exc:
                failures += 1
                wait = links.retry_wait(failures)
                log.info("reading %s's offers failed (%s); retrying in %.1f s", self._peer.origin, exc, wait)
                await asyncio.sleep(wait)
            finally:
                # A link the neighbour cut (it removed us, say) can fail to close: it is gone either way.
                with contextlib.suppress(Exception):
                    await links.close(nc)

    async def _may_read(self) -> bool:
        """Whether to read now: the exchange's tables exist here and the neighbour has no open fork evidence (its
        offers are hidden while it has, and shown again once it has not)."""
        async with self._pool.acquire() as conn:
            if not await neighbour_offers.ready(conn):
                return False
            forked = await store.has_open_evidence(conn, self._peer.origin)
            if forked and self._hidden is not True:
                await neighbour_offers.hide(conn, self._peer.origin)
                log.warning("offers of %s hidden from search: its log has open fork evidence", self._peer.origin)
            elif not forked and self._hidden is not False:
                await neighbour_offers.show(conn, self._peer.origin)
            self._hidden = forked
        return not forked

    async def _follow(self, nc: NatsClient) -> None:
        js = nc.jetstream()
        subscription = await js.pull_subscribe_bind(
            durable=names.peer_consumer(self._our_name),
            stream=names.offers_stream(self._peer.name),
            inbox_prefix=f"{access.inbox_prefix(self._our_name)}.".encode(),
        )
        while await self._may_read():
            try:
                msgs = await subscription.fetch(FETCH, timeout=FETCH_WAIT_SECONDS)
            except NatsTimeout:
                continue
            for msg in msgs:
                await self.receive(msg)

    async def receive(self, msg: Msg) -> None:
        """Verify one value and show it (an offer), or take its listing out of search (a tombstone)."""
        key = msg.subject.removeprefix(self._prefix)
        origin, network = self._peer.origin, self._peer.name
        operation = (msg.headers or {}).get(KV_OPERATION)
        try:
            if operation in ("DEL", "PURGE"):
                async with self._pool.acquire() as conn:
                    await neighbour_offers.remove(conn, origin, network, key)
            else:
                envelope = read(msg.data, key=key, origin=origin, log_key=self._peer.log_key)
                async with self._pool.acquire() as conn:
                    if isinstance(envelope, Offer):
                        await neighbour_offers.store(
                            conn,
                            neighbour_offers.ReceivedOffer(
                                origin=origin,
                                network=network,
                                listing=envelope.listing,
                                seq=envelope.seq,
                                kind=envelope.kind,
                                category=envelope.category,
                                title=envelope.title,
                                description=envelope.text,
                                area=envelope.area,
                                member_name=envelope.member_name,
                                expires=envelope.expires,
                            ),
                        )
                    else:
                        await neighbour_offers.remove(conn, origin, network, envelope.listing)
        except OfferRefused as exc:
            metrics.REJECTED.labels(peer=origin, reason=exc.reason).inc()
            log.warning("refused an offer from %s: %s", origin, exc)
            async with self._pool.acquire() as conn:
                await store.count_rejection(conn, origin, exc.reason, exc.detail)
            await msg.term()
            return
        await msg.ack()
