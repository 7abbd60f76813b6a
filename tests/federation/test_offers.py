"""Offers shared with neighbours: what a member shares is published, signed, in its network's offers bucket, and
shows in the neighbours' search with its network's name; edits replace it, and a pause, withdrawal or erasure
takes it away. Nothing but title, text, category, area and display name crosses. A value that is not the
network's is refused and counted; a removed peer's offers, or a forked one's, leave search."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import httpx
import msgspec
import nats
import pytest

from services.exchange import projections
from services.exchange.app import create_app as create_exchange
from services.federation import names, offer_reader
from services.federation.app import create_app as create_federation
from services.federation.offers_wire import Offer, OfferWithdrawn, peek, read, seal
from services.ledger.app import create_app as create_ledger
from services.node.compose import IN_PROCESS_LEDGER, Node
from shared.note import Signer
from shared.settings import ExchangeSettings
from tests.federation.faults import linked
from tests.federation.support import LOCAL_USER, TOKENS, Network, auth, eventually, served
from tests.federation.test_evidence import _fork

PASSWORD = "correct horse battery"


def full_node(net: Network) -> Node:
    """The network's node as ``timebank serve`` wires it, exchange included: ledger at /ledger, federation at
    /federation (signing our shared offers with the log key), the exchange at /."""
    settings = msgspec.structs.replace(net.settings(), exchange=ExchangeSettings(ledger_token=TOKENS["service"]))
    ledger = create_ledger(settings, database_url=net.database_url, signer=net.signer)
    in_process = httpx.ASGITransport(app=cast("Any", ledger))
    fed = create_federation(
        settings,
        database_url=net.database_url,
        ledger_url=IN_PROCESS_LEDGER,
        ledger_transport=in_process,
        witness_signer=net.witness,
        offers_signer=net.signer,
    )
    exchange = create_exchange(
        settings, database_url=net.database_url, ledger_url=IN_PROCESS_LEDGER, ledger_transport=in_process
    )
    return Node({"/ledger": ledger, "/federation": fed, "": exchange})


@asynccontextmanager
async def both(riverside: Network, hillside: Network) -> AsyncIterator[None]:
    linked(riverside, hillside)
    river_node, hill_node = full_node(riverside), full_node(hillside)
    async with served(riverside, app=river_node), served(hillside, app=hill_node):
        yield


async def member(net: Network, name: str) -> tuple[dict[str, str], str]:
    """An approved member signed in with a bearer token: their headers and email."""
    assert net.client is not None
    email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.org"
    body = {"name": name, "email": email, "password": PASSWORD, "area": "Old Town"}
    r = await net.client.post("/api/applications", json=body)
    assert r.status_code == 201, r.text
    member_id = r.json()["id"]
    r = await net.client.post(f"/api/members/{member_id}/approval", headers=auth("coordinator"))
    assert r.status_code == 200, r.text
    r = await net.client.post("/api/sessions", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}", "X-Member": member_id}, email


async def publish(net: Network, who: dict[str, str], title: str, **fields: Any) -> str:
    assert net.client is not None
    body = {"kind": "offer", "category": "home_repair", "title": title, "description": "Ask me.", **fields}
    r = await net.client.post("/api/listings", json=body, headers={"Authorization": who["Authorization"]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def search(net: Network, **params: str) -> list[dict[str, Any]]:
    assert net.client is not None
    r = await net.client.get("/api/listings", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def found(net: Network, title: str, **params: str) -> list[dict[str, Any]]:
    return [item for item in await search(net, **params) if item["title"] == title]


async def until_found(net: Network, title: str, present: bool = True, **params: str) -> list[dict[str, Any]]:
    async def check() -> bool:
        return bool(await found(net, title, **params)) == present

    await eventually(check, f"{net.name} {'finds' if present else 'no longer finds'} {title!r}", within=30)
    return await found(net, title, **params)


async def raw_bucket(net: Network) -> dict[str, bytes]:
    """Every key and value in the network's offers bucket, read from its NATS server as our own services can."""
    nc = await nats.connect(net.nats.url, user=LOCAL_USER, password=net.nats_password)
    try:
        kv = await nc.jetstream().key_value(names.offers_bucket(net.name))
        values: dict[str, bytes] = {}
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                break
            values[entry.key] = entry.value or b""
        await watcher.stop()  # type: ignore[no-untyped-call]
        return values
    finally:
        await nc.close()


async def put_raw(net: Network, key: str, value: bytes) -> None:
    nc = await nats.connect(net.nats.url, user=LOCAL_USER, password=net.nats_password)
    try:
        await (await nc.jetstream().key_value(names.offers_bucket(net.name))).put(key, value)
    finally:
        await nc.close()


async def test_a_shared_offer_shows_in_the_neighbours_search_and_follows_edits_pauses_and_withdrawal(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert riverside.client is not None
        ann, ann_email = await member(riverside, "Ann")
        shared = await publish(riverside, ann, "Bicycle repair", area="Old Town", shared=True)
        await publish(riverside, ann, "Private garden tools", shared=False)

        [offer] = await until_found(hillside, "Bicycle repair", q="bicycle")
        assert offer["network"] == riverside.origin
        assert offer["member_name"] == "Ann"
        assert (offer["category"], offer["area"], offer["kind"]) == ("home_repair", "Old Town", "offer")
        assert offer["member"] is None
        # The same filters as our own listings.
        assert await found(hillside, "Bicycle repair", category="home_repair", area="old town")
        assert not await found(hillside, "Bicycle repair", category="food")
        assert not await found(hillside, "Bicycle repair", kind="request")
        # The unshared one never crosses, and riverside's own search is unchanged.
        assert not await found(hillside, "Private garden tools")
        [own] = await found(riverside, "Bicycle repair")
        assert own["network"] is None

        # The bucket holds only what was shared, signed by riverside's log key: no email, no contact.
        bucket = await raw_bucket(riverside)
        assert list(bucket) == [shared]
        value = bucket[shared]
        assert ann_email.encode() not in value
        assert b"Private garden" not in value
        envelope = read(value, key=shared, origin=riverside.origin, log_key=riverside.signer.verifier())
        assert isinstance(envelope, Offer)
        assert set(msgspec.structs.asdict(envelope)) == {
            "origin", "listing", "seq", "kind", "category", "title", "text", "area", "member_name", "expires",
        }  # fmt: skip

        # An edit replaces the offer.
        headers = {"Authorization": ann["Authorization"]}
        r = await riverside.client.patch(f"/api/listings/{shared}", json={"title": "Bike repair"}, headers=headers)
        assert r.status_code == 200, r.text
        await until_found(hillside, "Bike repair")
        assert not await found(hillside, "Bicycle repair")

        # Paused: gone; resumed: back; withdrawn: gone, as a tombstone in the bucket.
        for action, present in (("pause", False), ("resume", True), ("withdraw", False)):
            r = await riverside.client.post(f"/api/listings/{shared}/{action}", headers=headers)
            assert r.status_code == 200, r.text
            await until_found(hillside, "Bike repair", present=present)
        assert isinstance(peek((await raw_bucket(riverside))[shared]), OfferWithdrawn)

        # Unsharing a listing takes it away too.
        other = await publish(riverside, ann, "Lifts to the clinic", shared=True)
        await until_found(hillside, "Lifts to the clinic")
        r = await riverside.client.patch(f"/api/listings/{other}", json={"shared": False}, headers=headers)
        assert r.status_code == 200, r.text
        await until_found(hillside, "Lifts to the clinic", present=False)


async def test_an_erased_members_offers_leave_the_neighbours_search(two_networks: tuple[Network, Network]) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert riverside.client is not None
        bo, _ = await member(riverside, "Bo")
        await publish(riverside, bo, "Sourdough lessons", shared=True, category="food")
        await until_found(hillside, "Sourdough lessons")
        r = await riverside.client.post(f"/api/members/{bo['X-Member']}/erasure", headers=auth("coordinator"))
        assert r.status_code == 200, r.text
        await until_found(hillside, "Sourdough lessons", present=False)


async def test_values_that_are_not_the_neighbours_are_refused_and_counted(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert riverside.client is not None
        cy, _ = await member(riverside, "Cy")
        genuine = await publish(riverside, cy, "Genuine offer", shared=True)
        await until_found(hillside, "Genuine offer")

        def forged_offer(listing: str, title: str) -> Offer:
            return Offer(
                origin=riverside.origin,
                listing=listing,
                seq=10**9,
                kind="offer",
                category="other",
                title=title,
                text="forged",
                expires=datetime.now(UTC) + timedelta(days=30),
            )

        # Signed by another key under riverside's name; and riverside's own value put under another listing's key.
        impostor = Signer.generate(riverside.origin)
        await put_raw(riverside, "lst_forged", seal(forged_offer("lst_forged", "Forged offer"), impostor))
        moved = seal(forged_offer("lst_elsewhere", "Moved offer"), riverside.signer)
        await put_raw(riverside, "lst_other", moved)

        async def counted() -> bool:
            [peer] = (await hillside.status())["peers"]
            reasons = {r["reason"]: r["count"] for r in peer["rejected"]}
            return reasons.get("offer-signature") == 1 and reasons.get("offer-key") == 1

        await eventually(counted, "hillside counts both refusals by reason")
        titles = {item["title"] for item in await search(hillside)}
        assert "Forged offer" not in titles
        assert "Moved offer" not in titles
        assert "Genuine offer" in titles
        assert list(await raw_bucket(riverside)) == [genuine, "lst_forged", "lst_other"]


async def test_a_rebuild_keeps_neighbours_offers_and_a_removed_peers_leave_search(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert hillside.client is not None
        di, _ = await member(riverside, "Di")
        await publish(riverside, di, "Piano tuning", shared=True)
        await until_found(hillside, "Piano tuning")
        # `timebank rebuild exchange` remakes hillside's read models from its events: riverside's offer stays.
        conn = await asyncpg.connect(hillside.database_url)
        try:
            await projections.rebuild(conn)
        finally:
            await conn.close()
        assert await found(hillside, "Piano tuning")
        r = await hillside.client.delete(f"/federation/peers/{riverside.origin}", headers=auth("coordinator"))
        assert r.status_code in (200, 204), r.text
        assert not await found(hillside, "Piano tuning")
        # Riverside's coordinator removes hillside too (its links to hillside no longer sign in).
        assert riverside.client is not None
        r = await riverside.client.delete(f"/federation/peers/{hillside.origin}", headers=auth("coordinator"))
        assert r.status_code in (200, 204), r.text


async def test_a_forked_peers_offers_leave_search_until_the_evidence_is_dismissed(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert hillside.client is not None
        ed, _ = await member(riverside, "Ed")
        await publish(riverside, ed, "Dog walking", shared=True)
        [offer] = await until_found(hillside, "Dog walking")
        link = f"/api/listings/{offer['id']}"
        assert (await hillside.client.get(link)).status_code == 200
        await _fork(riverside, hillside)
        await until_found(hillside, "Dog walking", present=False)
        assert (await hillside.client.get(link)).status_code == 404  # gone by a direct link too
        body = {"origin": riverside.origin, "action": "dismiss", "reason": "a test checkpoint"}
        r = await hillside.client.post("/federation/evidence/resolutions", json=body, headers=auth("coordinator"))
        assert r.status_code in (200, 201), r.text
        await until_found(hillside, "Dog walking")
        assert (await hillside.client.get(link)).status_code == 200


@pytest.fixture(autouse=True)
def _fast_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offer_reader, "IDLE_SECONDS", 0.2)


async def test_an_expired_offer_becomes_a_tombstone_and_the_pages_show_offers_with_their_network(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    async with both(riverside, hillside):
        assert hillside.client is not None
        fay, _ = await member(riverside, "Fay")
        soon = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
        listing = await publish(riverside, fay, "Window cleaning", shared=True, expires=soon)
        [offer] = await until_found(hillside, "Window cleaning")
        page = await hillside.client.get("/", params={"q": "window"})
        assert page.status_code == 200
        assert "Window cleaning" in page.text
        assert f"from {riverside.origin}" in page.text
        detail = await hillside.client.get(f"/listings/{offer['id']}")
        assert detail.status_code == 200
        assert riverside.origin in detail.text
        assert "Fay" in detail.text

        async def tombstoned() -> bool:
            return isinstance(peek((await raw_bucket(riverside)).get(listing, b"")), OfferWithdrawn)

        await eventually(tombstoned, "riverside's bucket holds a tombstone for the expired offer", within=30)
        assert not await found(hillside, "Window cleaning")


async def test_with_three_networks_each_finds_both_neighbours_offers_marked_with_their_network(
    three_networks: tuple[Network, Network, Network],
) -> None:
    nets = three_networks
    linked(*nets)
    nodes = [full_node(net) for net in nets]
    async with served(nets[0], app=nodes[0]), served(nets[1], app=nodes[1]), served(nets[2], app=nodes[2]):
        for net in nets:
            who, _ = await member(net, f"Host {net.name}")
            await publish(net, who, f"Soup kitchen shift in {net.name}", shared=True, category="food")
        for net in nets:
            for other in nets:
                [offer] = await until_found(net, f"Soup kitchen shift in {other.name}", q="soup")
                assert offer["network"] == (None if other is net else other.origin)
            assert len(await search(net, q="soup", category="food")) == len(nets)


async def test_a_restarted_network_resumes_from_its_bucket_writing_nothing_twice(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(hillside, app=full_node(hillside)):
        async with served(riverside, app=full_node(riverside)):
            gus, _ = await member(riverside, "Gus")
            listing = await publish(riverside, gus, "Chess club", shared=True)
            await until_found(hillside, "Chess club")
            before = await quiet_revisions(riverside)
        async with served(riverside, app=full_node(riverside)):
            assert riverside.client is not None
            edit = {"title": "Chess lessons"}
            r = await riverside.client.patch(
                f"/api/listings/{listing}", json=edit, headers={"Authorization": gus["Authorization"]}
            )
            assert r.status_code == 200, r.text
            await until_found(hillside, "Chess lessons")
            assert not await found(hillside, "Chess club")
            # One new message in the bucket's stream (revisions count them all): the edit's. Nothing was written
            # again on the restart.
            assert await revisions(riverside) == {listing: before[listing] + 1}


async def quiet_revisions(net: Network) -> dict[str, int]:
    """The bucket's revisions once the publisher has written all it had to (two reads a second apart agree)."""
    seen = await revisions(net)
    for _ in range(30):
        await asyncio.sleep(1.0)
        now = await revisions(net)
        if now == seen:
            return now
        seen = now
    raise AssertionError(f"{net.name}'s offers bucket kept changing: {seen}")


async def revisions(net: Network) -> dict[str, int]:
    """Each key's revision in the network's offers bucket."""
    nc = await nats.connect(net.nats.url, user=LOCAL_USER, password=net.nats_password)
    try:
        kv = await nc.jetstream().key_value(names.offers_bucket(net.name))
        found: dict[str, int] = {}
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                break
            found[entry.key] = entry.revision or 0
        await watcher.stop()  # type: ignore[no-untyped-call]
        return found
    finally:
        await nc.close()
