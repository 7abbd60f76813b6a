"""A neighbour's NATS credential reads our log and our shared offers through its own consumers, and nothing else;
it writes nowhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from services.federation import access, names, offer_reader, wire
from services.node.testing import NatsFactory

LOCAL = ("timebank", "local-secret")
ISSUED = {"hillside": "hill-secret", "lakeside": "lake-secret"}
STREAM = names.log_stream("riverside")
SUBJECT = names.log_subject("riverside")


class Violations:
    """Collects the permission violations the server reports to a client."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc))

    async def wait_for(self, text: str) -> None:
        for _ in range(100):
            # nats-py reports the server's message in lower case.
            if any(text.lower() in seen.lower() for seen in self.seen):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no permissions violation mentioning {text!r}; saw {self.seen}")


@pytest.fixture
async def riverside(nats_factory: NatsFactory) -> AsyncIterator[tuple[str, Client]]:
    """Riverside's NATS server with its log stream holding one batch, a consumer per neighbour; and its own
    services' connection."""
    server = nats_factory(
        "riverside-perm", jetstream_domain="riverside", extra_config=access.authorization("riverside", *LOCAL, ISSUED)
    )
    nc = await nats.connect(server.url, user=LOCAL[0], password=LOCAL[1])
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=[SUBJECT])
    for peer in ISSUED:
        await js.add_consumer(
            STREAM, ConsumerConfig(durable_name=names.peer_consumer(peer), ack_policy=AckPolicy.EXPLICIT)
        )
    batch = wire.LogBatch(origin="timebank.test/riverside", start=0, entries=[b"entry"])
    await js.publish(SUBJECT, wire.encoder.encode(batch))
    try:
        yield server.url, nc
    finally:
        await nc.close()
        server.stop()


async def _as_hillside(url: str, violations: Violations) -> Client:
    return await nats.connect(
        url,
        user=access.peer_user("hillside"),
        password=ISSUED["hillside"],
        inbox_prefix=access.inbox_prefix("hillside").encode(),
        error_cb=violations.record,
    )


async def test_a_neighbour_reads_our_log_through_its_own_consumer(riverside: tuple[str, Client]) -> None:
    url, _ = riverside
    violations = Violations()
    nc = await _as_hillside(url, violations)
    try:
        sub = await nc.jetstream().pull_subscribe_bind(
            durable=names.peer_consumer("hillside"), stream=STREAM, inbox_prefix=b"_INBOX_hillside."
        )
        [msg] = await sub.fetch(1, timeout=5)
        assert wire.decoder.decode(msg.data).entries == [b"entry"]
        await msg.ack_sync(timeout=5)
    finally:
        await nc.close()
    assert violations.seen == []


async def test_a_neighbour_cannot_write_into_our_streams(riverside: tuple[str, Client]) -> None:
    url, local = riverside
    violations = Violations()
    nc = await _as_hillside(url, violations)
    try:
        forged = wire.LogBatch(origin="timebank.test/riverside", start=1, entries=[b"forged"])
        await nc.publish(SUBJECT, wire.encoder.encode(forged))
        await violations.wait_for(f'Publish to "{SUBJECT}"')
        await nc.publish("$JS.API.STREAM.PURGE." + STREAM, b"")
        await violations.wait_for("STREAM.PURGE")
    finally:
        await nc.close()
    info = await local.jetstream().stream_info(STREAM)
    assert info.state.messages == 1


async def test_a_neighbour_cannot_read_anything_else(riverside: tuple[str, Client]) -> None:
    url, _ = riverside
    violations = Violations()
    nc = await _as_hillside(url, violations)
    try:
        # Another neighbour's consumer of our log.
        other = await nc.jetstream().pull_subscribe_bind(
            durable=names.peer_consumer("lakeside"), stream=STREAM, inbox_prefix=b"_INBOX_hillside."
        )
        with pytest.raises(nats.errors.TimeoutError):
            await other.fetch(1, timeout=1)
        await violations.wait_for("CONSUMER.MSG.NEXT." + STREAM + ".peer-lakeside")
        # The subjects our services talk on, and the JetStream API.
        await nc.subscribe("timebank.>")
        await violations.wait_for('Subscription to "timebank.>"')
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("$JS.API.STREAM.INFO." + STREAM, b"", timeout=1)
        await violations.wait_for("STREAM.INFO")
    finally:
        await nc.close()


OFFERS = names.offers_stream("riverside")


@pytest.fixture
async def riverside_offers(riverside: tuple[str, Client]) -> tuple[str, Client]:
    """Riverside's server as above, with its offers bucket holding one value and a consumer of it per neighbour."""
    url, nc = riverside
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=names.offers_bucket("riverside"), history=1)
    await kv.put("lst_1", b"an offer")
    for peer in ISSUED:
        await offer_reader.offer_to(js, "riverside", peer)
    return url, nc


async def test_a_neighbour_reads_our_offers_through_its_own_consumer(riverside_offers: tuple[str, Client]) -> None:
    url, _ = riverside_offers
    violations = Violations()
    nc = await _as_hillside(url, violations)
    try:
        sub = await nc.jetstream().pull_subscribe_bind(
            durable=names.peer_consumer("hillside"), stream=OFFERS, inbox_prefix=b"_INBOX_hillside."
        )
        [msg] = await sub.fetch(1, timeout=5)
        assert (msg.subject, msg.data) == (f"$KV.{names.offers_bucket('riverside')}.lst_1", b"an offer")
        await msg.ack_sync(timeout=5)
    finally:
        await nc.close()
    assert violations.seen == []


async def test_a_neighbour_cannot_write_our_offers_bucket(riverside_offers: tuple[str, Client]) -> None:
    url, local = riverside_offers
    violations = Violations()
    nc = await _as_hillside(url, violations)
    subject = f"$KV.{names.offers_bucket('riverside')}.lst_1"
    try:
        await nc.publish(subject, b"a forged offer")
        await violations.wait_for(f'Publish to "{subject}"')
        await nc.publish("$JS.API.STREAM.PURGE." + OFFERS, b"")
        await violations.wait_for("STREAM.PURGE." + OFFERS)
        # Nor read it otherwise: another neighbour's consumer, or a consumer of its own making.
        other = await nc.jetstream().pull_subscribe_bind(
            durable=names.peer_consumer("lakeside"), stream=OFFERS, inbox_prefix=b"_INBOX_hillside."
        )
        with pytest.raises(nats.errors.TimeoutError):
            await other.fetch(1, timeout=1)
        await violations.wait_for("CONSUMER.MSG.NEXT." + OFFERS + ".peer-lakeside")
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("$JS.API.CONSUMER.CREATE." + OFFERS, b"{}", timeout=1)
        await violations.wait_for("CONSUMER.CREATE")
    finally:
        await nc.close()
    kv = await local.jetstream().key_value(names.offers_bucket("riverside"))
    assert (await kv.get("lst_1")).value == b"an offer"
    info = await local.jetstream().stream_info(OFFERS)
    assert info.state.messages == 1
