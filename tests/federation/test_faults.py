"""Networks keep working while a neighbour is unreachable or a node dies, and settle everything exactly once when
it returns.

Each test runs real nats-servers (one per network) and ends as an auditor would: both logs audit, the
cross-network transfers pair up, and balance_A(peer:B) + balance_B(peer:A) equals the minutes in flight.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx

from tests.federation.faults import (
    NOBODY,
    Proxy,
    audit_pair,
    decisions,
    in_flight,
    linked,
    pairing_detail,
    reversals,
    settled,
)
from tests.federation.processes import node_processes
from tests.federation.support import Network, auth, eventually, served


async def _published(net: Network) -> bool:
    """Whether the network's publisher has put all of its log on its own stream."""
    return (await net.status())["published_size"] >= await net.log_size()


async def test_a_partition_leaves_payments_in_flight_and_they_settle_once_when_the_link_returns(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    # Each federation reaches the other's NATS only through a proxy the test can cut.
    async with Proxy(riverside.nats.url) as to_riverside, Proxy(hillside.nats.url) as to_hillside:
        hillside.peers = [riverside.as_peer(hillside, nats_url=to_riverside.url)]
        riverside.peers = [hillside.as_peer(riverside, nats_url=to_hillside.url)]
        await _partition(riverside, hillside, to_riverside, to_hillside)


async def _partition(riverside: Network, hillside: Network, to_riverside: Proxy, to_hillside: Proxy) -> None:
    async with served(riverside), served(hillside):
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        before = await riverside.pay_remote("before", alice, hillside, bob, 5)
        await settled(riverside, hillside, {before["id"]}, set())

        await to_riverside.cut()
        await to_hillside.cut()
        # Members still trade locally.
        await riverside.transfers(5, "local")
        await hillside.transfers(5, "local")
        # Payments across stay in flight, both ways.
        sent = {before["id"]}
        for n, minutes in enumerate((10, 20, 30)):
            sent.add((await riverside.pay_remote(f"cut-{n}", alice, hillside, bob, minutes))["id"])
        typo = (await riverside.pay_remote("cut-typo", alice, hillside, NOBODY, 7))["id"]
        sent.add(typo)
        back = await hillside.pay_remote("cut-back", bob, riverside, alice, 15)
        await eventually(lambda: _published(riverside), "riverside publishes its log to its own stream")
        await eventually(lambda: _published(hillside), "hillside publishes its log to its own stream")
        assert await hillside.balance(bob) == 5 - 15
        assert await riverside.balance(alice) == -5 - 60 - 7
        assert await in_flight(riverside, hillside) == 60 + 7 + 15
        # An auditor reading both logs sees the same: they pair, with those minutes in flight.
        detail = pairing_detail(await audit_pair(riverside, hillside))
        assert f"(peer:{riverside.origin}) = 82 (4 of {riverside.origin}'s not yet decided by" in detail, detail
        assert f"1 of {hillside.origin}'s not yet decided by {riverside.origin}" in detail, detail

        await to_riverside.open()
        await to_hillside.open()
        await settled(riverside, hillside, sent, {back["id"]})
        assert await hillside.balance(bob) == 5 + 60 - 15
        assert await riverside.balance(alice) == -5 - 60 + 15, "the payment to nobody came back"
        assert await reversals(riverside) == [typo]
        assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")
        assert pairing_detail(await audit_pair(hillside, riverside)).endswith(" = 0")


async def test_a_stopped_nats_server_holds_payments_in_flight_until_it_returns(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(riverside), served(hillside):
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        sent = {(await riverside.pay_remote("before", alice, hillside, bob, 5))["id"]}
        await settled(riverside, hillside, sent, set())

        # Riverside's own server goes down (its store and port kept): nobody can read its log meanwhile.
        await asyncio.to_thread(riverside.nats.stop)
        await riverside.transfers(3, "local")
        for n, minutes in enumerate((10, 20)):
            sent.add((await riverside.pay_remote(f"down-{n}", alice, hillside, bob, minutes))["id"])
        # Hillside's server is up, so riverside still reads hillside's log and decides what it is paid.
        back = await hillside.pay_remote("back", bob, riverside, alice, 15)

        async def riverside_decided() -> bool:
            return back["id"] in await decisions(riverside, hillside.origin)

        await eventually(riverside_decided, "riverside decides hillside's payment while its own server is down")
        assert await riverside.balance(alice) == -5 - 30 + 15
        assert await in_flight(riverside, hillside) == 30
        detail = pairing_detail(await audit_pair(riverside, hillside))
        assert detail.endswith(
            f" = 30 (2 of {riverside.origin}'s not yet decided by {hillside.origin}; "
            f"1 accepted by {riverside.origin}, not yet recorded by {hillside.origin})"
        ), detail

        await asyncio.to_thread(riverside.nats.start)
        await settled(riverside, hillside, sent, {back["id"]})
        assert await hillside.balance(bob) == 5 + 30 - 15
        assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")


async def test_three_networks_pay_in_every_direction_and_a_cut_link_holds_up_only_its_own_pair(
    three_networks: tuple[Network, Network, Network],
) -> None:
    nets = three_networks
    riverside, hillside, lakeside = nets
    linked(*nets)
    # Riverside and hillside reach each other through proxies; lakeside reaches both directly.
    async with Proxy(riverside.nats.url) as to_riverside, Proxy(hillside.nats.url) as to_hillside:
        hillside.peers = [riverside.as_peer(hillside, nats_url=to_riverside.url), lakeside.as_peer(hillside)]
        riverside.peers = [hillside.as_peer(riverside, nats_url=to_hillside.url), lakeside.as_peer(riverside)]
        async with served(riverside), served(hillside), served(lakeside):
            members = {net.name: await net.open_member(f"member-{net.name}") for net in nets}
            for net in nets:  # every clearing account linked before the cut
                for other in nets:
                    if other is not net:
                        await net.clearing_account(other.origin)
            await to_riverside.cut()
            await to_hillside.cut()
            sent: dict[tuple[str, str], set[str]] = {}
            for payer, payee in itertools.permutations(nets, 2):
                paid = await payer.pay_remote(f"to-{payee.name}", members[payer.name], payee, members[payee.name], 7)
                sent[payer.name, payee.name] = {paid["id"]}
            # Lakeside's links are up: its pairs settle while riverside and hillside cannot reach each other.
            for other in (riverside, hillside):
                await settled(lakeside, other, sent[lakeside.name, other.name], sent[other.name, lakeside.name])
            assert await in_flight(riverside, hillside) == 14
            assert " = 14 (" in pairing_detail(await audit_pair(riverside, hillside))

            await to_riverside.open()
            await to_hillside.open()
            for a, b in itertools.combinations(nets, 2):
                await settled(a, b, sent[a.name, b.name], sent[b.name, a.name])
            for net in nets:
                assert await net.balance(members[net.name]) == 0, "each paid two neighbours 7 and was paid 7 by each"
            for a, b in itertools.combinations(nets, 2):
                assert pairing_detail(await audit_pair(a, b)).endswith(" = 0")


async def _pay_until_answered(net: Network, key: str, payer: str, clearing: str, payee: str, minutes: int) -> str:
    """Pay as a client would while the node may be down: the same key again until the ledger answers."""
    assert net.client is not None
    body = {"key": key, "payer": payer, "payee": clearing, "minutes": minutes, "remote_payee": payee}
    while True:
        try:
            r = await net.client.post("/ledger/transfers", json=body, headers=auth("service"))
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if r.status_code >= 500:
            await asyncio.sleep(0.2)
            continue
        assert r.status_code in (200, 201), r.text
        return str(r.json()["id"])


async def _answered(ask: Callable[[], Awaitable[int]]) -> int:
    """``ask()``, once the node answers (it may still be starting)."""
    while True:
        try:
            return await ask()
        except httpx.TransportError:
            await asyncio.sleep(0.2)


async def test_nodes_killed_mid_batch_settle_everything_once_after_a_restart(
    two_networks: tuple[Network, Network], tmp_path: Path
) -> None:
    riverside, hillside = two_networks
    # Room for every payment the test makes while the nodes restart: nothing is refused for limits.
    hillside.peers = [riverside.as_peer(hillside, trust_limit=100_000)]
    riverside.peers = [hillside.as_peer(riverside, trust_limit=100_000)]
    async with node_processes(tmp_path, riverside, hillside) as (river_node, hill_node):
        assert riverside.client is not None
        r = await riverside.client.post(
            "/ledger/accounts", json={"key": "alice", "floor": -100_000}, headers=auth("coordinator")
        )
        assert r.status_code == 201, r.text
        alice = str(r.json()["id"])
        bob = await hillside.open_member("bob")
        clearing = await riverside.clearing_account(hillside.origin)
        stop = asyncio.Event()

        refused: set[str] = set()

        payees = [bob, bob, bob, NOBODY]

        async def pay(key: str, payee: str) -> str:
            return await _pay_until_answered(riverside, key, alice, clearing, payee, 1)

        async def pay_until_stopped() -> set[str]:
            sent: set[str] = set()
            while not stop.is_set():
                # A few at once, so that the ledger commits several in one batch, at a pace a loaded machine keeps;
                # the last of each few to nobody in hillside, to be rejected there and reversed here.
                first = len(sent)
                paid = await asyncio.gather(*(pay(f"pay-{first + i}", payee) for i, payee in enumerate(payees)))
                sent |= set(paid)
                refused.add(paid[-1])
                await asyncio.sleep(0.2)
            return sent

        paying = asyncio.create_task(pay_until_stopped())

        async def decided() -> int:
            return len(await decisions(hillside, riverside.origin))

        async def more_decided(than: int) -> bool:
            try:
                return await decided() >= than
            except httpx.TransportError:
                return False

        # The payer dies while it publishes, and the receiver while it decides; payments go on throughout.
        for node in (river_node, hill_node):
            before = await _answered(decided)
            await eventually(partial(more_decided, before + 8), "hillside decides more payments", within=90)
            node.kill()
            node.start()
            await node.ready()
        before = await _answered(decided)
        await eventually(partial(more_decided, before + 8), "hillside decides payments after the restarts", within=90)
        stop.set()
        sent = await paying
        payments = len(sent)

        await settled(riverside, hillside, sent, set())
        assert await hillside.balance(bob) == payments - len(refused)
        assert await riverside.balance(alice) == -(payments - len(refused))
        assert sorted(await reversals(riverside)) == sorted(refused), "each rejected payment reversed once"
        assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")
