"""Trades between members of two networks settle by themselves: decided by the payee's network from the payer's
verified log, and reversed by the payer's network when the payee's network refused."""

from __future__ import annotations

import base64

from services.ledger.entries import CrossnetAccepted, CrossnetRejected, Transfer, entry_decoder
from tests.federation.support import Network, eventually, running


def _linked(riverside: Network, hillside: Network) -> None:
    riverside.peers = [hillside.as_peer(riverside)]
    hillside.peers = [riverside.as_peer(hillside)]


async def _entries(net: Network) -> list[object]:
    assert net.client is not None
    size = await net.log_size()
    r = await net.client.get("/ledger/log/entries", params={"start": 0, "end": size})
    return [entry_decoder.decode(base64.b64decode(e["data"])) for e in r.json()["entries"]]


async def _in_flight(riverside: Network, hillside: Network) -> int:
    """balance_R(peer:H) + balance_H(peer:R): the minutes paid by one side and not yet decided by the other."""
    return await riverside.balance(await riverside.clearing_account(hillside.origin)) + await hillside.balance(
        await hillside.clearing_account(riverside.origin)
    )


async def test_a_payment_to_a_neighbours_member_arrives_and_the_clearing_accounts_net_to_zero(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    _linked(riverside, hillside)
    async with running(riverside, hillside):
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        sent = await riverside.pay_remote("lift-to-clinic", alice, hillside, bob, 90)

        async def bob_paid() -> bool:
            return await hillside.balance(bob) == 90

        await eventually(bob_paid, "bob is paid in hillside")
        assert await riverside.balance(alice) == -90
        assert await _in_flight(riverside, hillside) == 0

        async def answered() -> bool:
            [peer] = (await riverside.status())["peers"]
            return peer["in_flight_out"] == {"payments": 0, "minutes": 0}

        await eventually(answered, "riverside sees hillside's acceptance in its copy of hillside's log")
        # Hillside's members owe nothing to riverside's: riverside's member paid.
        [peer] = (await riverside.status())["peers"]
        assert (peer["trust_used"], peer["lag_entries"], peer["in_flight_in"]["minutes"]) == (0, 0, 0)
        [theirs] = (await hillside.status())["peers"]
        assert (theirs["trust_used"], theirs["trust_limit"]) == (90, 600)
        # Hillside's log says where the minutes came from: riverside's transfer, by id and index.
        [accepted] = [e for e in await _entries(hillside) if isinstance(e, Transfer) and e.remote is not None]
        assert accepted.payee == bob
        assert accepted.remote is not None
        assert (accepted.remote.origin, accepted.remote.transfer, accepted.remote.index) == (
            riverside.origin,
            sent["id"],
            sent["index"],
        )


async def test_a_payment_the_neighbour_refuses_is_reversed_and_nothing_stays_in_flight(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    _linked(riverside, hillside)
    async with running(riverside, hillside):
        alice = await riverside.open_member("alice")
        nobody = "acct_" + "0" * 20  # no such member in hillside
        sent = await riverside.pay_remote("to-nobody", alice, hillside, nobody, 30)

        async def alice_refunded() -> bool:
            return await riverside.balance(alice) == 0 and sent["id"] in {
                e.reverses for e in await _entries(riverside) if isinstance(e, Transfer)
            }

        await eventually(alice_refunded, "riverside reverses the refused payment")
        [rejected] = [e for e in await _entries(hillside) if isinstance(e, CrossnetRejected)]
        assert (rejected.transfer, rejected.reason) == (sent["id"], "unknown_payee")
        assert await _in_flight(riverside, hillside) == 0


async def test_the_payer_records_the_acceptance_and_only_then_counts_the_minutes_as_settled(
    two_networks: tuple[Network, Network],
) -> None:
    """Riverside's 90 minutes count when it decides hillside's payments only once riverside's log records
    hillside's acceptance (naming hillside's decision): then a payment of the trust limit (600) plus those 90 is
    accepted; in flight, they would not have counted."""
    riverside, hillside = two_networks
    _linked(riverside, hillside)
    async with running(riverside, hillside):
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        sent = await riverside.pay_remote("lift-to-clinic", alice, hillside, bob, 90)
        records: list[CrossnetAccepted] = []

        async def recorded() -> bool:
            records[:] = [e for e in await _entries(riverside) if isinstance(e, CrossnetAccepted)]
            return bool(records)

        await eventually(recorded, "riverside records hillside's acceptance in its log")
        [record] = records
        hillside_log = await _entries(hillside)
        decision = hillside_log[record.index]
        assert isinstance(decision, Transfer)
        assert decision.remote is not None
        assert (record.origin, record.transfer, decision.remote.transfer) == (hillside.origin, sent["id"], sent["id"])

        back = await hillside.pay_remote("all-of-it", bob, riverside, alice, 690)

        async def alice_paid() -> bool:
            return await riverside.balance(alice) == 600

        await eventually(alice_paid, "riverside accepts hillside's 690 minutes against the settled 90")
        assert back["id"] not in {e.transfer for e in await _entries(riverside) if isinstance(e, CrossnetRejected)}
        assert await _in_flight(riverside, hillside) == 0
