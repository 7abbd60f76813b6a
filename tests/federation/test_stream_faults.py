"""What arrives on a neighbour's log stream may be copied, out of order, held across a restart, tampered with or
signed by the wrong key: the copy still ends identical to the log, and nothing is decided twice or on bad data.

Batches are put on riverside's stream with its own services' credential while its federation is down, so the test
decides what hillside reads and in what order. Each test ends with both logs audited and paired.
"""

from __future__ import annotations

import msgspec
import nats
import pytest

from services.federation import names, replicator, wire
from services.federation.publisher import ACK_WAIT_SECONDS
from services.ledger.entries import Transfer, entry_decoder, entry_encoder
from shared.note import Signer, sign_note
from tests.federation.faults import (
    audit_pair,
    batches,
    copy_of,
    copy_size,
    decisions,
    entries,
    inject,
    linked,
    pairing_detail,
    pay_through,
    rejected,
    settled,
)
from tests.federation.support import LOCAL_USER, Network, eventually, served


async def test_duplicated_and_reordered_batches_leave_an_identical_copy_and_decide_nothing_twice(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(hillside):
        async with served(riverside):
            alice = await riverside.open_member("alice")
            bob = await hillside.open_member("bob")
            clearing = await riverside.clearing_account(hillside.origin)
            sent = {await pay_through(riverside, "first", alice, clearing, bob, 10)}
            await settled(riverside, hillside, sent, set())
            old = await batches(riverside)
        # Riverside's federation is down: its ledger goes on alone, and publishes nothing itself.
        async with served(riverside, federation=False):
            for n, minutes in enumerate((20, 30, 40)):
                sent.add(await pay_through(riverside, f"alone-{n}", alice, clearing, bob, minutes))
            await riverside.transfers(3, "locally")
            new = await batches(riverside, after=old[-1].end)
            assert len(new) >= 5, "several signed checkpoints, to send out of order"
            # The new batches backwards, everything hillside already holds again, then the new ones twice more.
            await inject(riverside, [*new[::-1], *old[::-1], *new, *new[::-1]], "replayed")
            log = await entries(riverside)

            async def caught_up() -> bool:
                return await copy_size(hillside, riverside.origin) == len(log)

            await eventually(caught_up, "hillside's copy catches up from the reordered batches")
            assert (await copy_of(hillside, riverside.origin))[1] == log
        # Back up, riverside's publisher resumes after the stream's last message (the earliest new batch) and
        # sends the rest again: more duplicates.
        async with served(riverside):
            await settled(riverside, hillside, sent, set())
            assert await hillside.balance(bob) == 100
            assert (await copy_of(hillside, riverside.origin))[1] == await entries(riverside)
            assert await rejected(hillside, riverside.origin) == {}, "copies and reordering are not faults"
            assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")


async def test_batches_held_too_long_ahead_of_a_hole_come_again_once_it_fills(
    two_networks: tuple[Network, Network], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a receiver's crash: the batches it had fetched come again only after the stream's ack wait, and a
    busy neighbour's later batches pile up ahead of that hole meanwhile. Those must not be lost for good."""
    riverside, hillside = two_networks
    # Fewer batches ahead than in production make the pile overflow in a test-sized log.
    monkeypatch.setattr(replicator, "MAX_AHEAD", 16)
    linked(riverside, hillside)
    async with served(hillside):
        async with served(riverside):
            alice = await riverside.open_member("alice")
            bob = await hillside.open_member("bob")
            clearing = await riverside.clearing_account(hillside.origin)
            sent = {await pay_through(riverside, "first", alice, clearing, bob, 10)}
            await settled(riverside, hillside, sent, set())
            held = (await batches(riverside))[-1].end
        async with served(riverside, federation=False):
            for n in range(3):
                sent.add(await pay_through(riverside, f"later-{n}", alice, clearing, bob, 5))
            new = await batches(riverside, after=held)
            assert len(new) == 3
            # Everything after the hole, then more copies of the last batch than fit ahead, then the hole's batch.
            await inject(riverside, [*new[1:], *[new[-1]] * 20, new[0]], "after-a-hole")
            log = await entries(riverside)

            async def caught_up() -> bool:
                return await copy_size(hillside, riverside.origin) == len(log)

            await eventually(caught_up, "hillside's copy passes the hole and takes the batches after it")
            assert "gap" in await rejected(hillside, riverside.origin), "the pile overflowed, and was counted"
        async with served(riverside):
            await settled(riverside, hillside, sent, set())
            assert await hillside.balance(bob) == 25
            assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")


async def test_a_restarted_receiver_takes_up_the_batches_it_held_without_waiting_for_the_ack_wait(
    two_networks: tuple[Network, Network],
) -> None:
    """A receiver that stops while it holds batches (ahead of a hole, unacknowledged) hands them back, so the next
    one to read gets them at once, not after the stream's ack wait (a deploy should not stall replication)."""
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(hillside), served(riverside):
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        clearing = await riverside.clearing_account(hillside.origin)
        sent = {await pay_through(riverside, "first", alice, clearing, bob, 10)}
        await settled(riverside, hillside, sent, set())
        held = (await batches(riverside))[-1].end
    async with served(riverside, federation=False):
        for n in range(2):
            sent.add(await pay_through(riverside, f"later-{n}", alice, clearing, bob, 5))
        first, second = await batches(riverside, after=held)
        async with served(hillside):
            await inject(riverside, [second], "ahead-of-a-hole")
            await eventually(lambda: _unacknowledged(riverside, hillside), "hillside holds the batch ahead")
        async with served(hillside):
            await inject(riverside, [first], "the-hole")

            async def caught_up() -> bool:
                return await copy_size(hillside, riverside.origin) == second.end

            await eventually(
                caught_up, "hillside takes up the batch it held before it restarted", within=ACK_WAIT_SECONDS * 2 / 3
            )
    async with served(riverside), served(hillside):
        await settled(riverside, hillside, sent, set())
        assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")


async def _unacknowledged(net: Network, reader: Network) -> bool:
    """Whether ``reader`` holds messages of ``net``'s log stream that it has not acknowledged (asked of ``net``'s
    own server, with its services' credential)."""
    nc = await nats.connect(servers=[net.nats.url], user=LOCAL_USER, password=net.nats_password)
    try:
        info = await nc.jetstream().consumer_info(names.log_stream(net.name), names.peer_consumer(reader.name))
        return bool(info.num_ack_pending)
    finally:
        await nc.close()


def _tampered(batch: wire.LogBatch, transfer: str, minutes: int) -> wire.LogBatch:
    """``batch`` with the minutes of ``transfer`` changed, and its real checkpoint left as it was."""
    changed = []
    for data in batch.entries:
        entry = entry_decoder.decode(data)
        if isinstance(entry, Transfer) and entry.id == transfer:
            data = entry_encoder.encode(msgspec.structs.replace(entry, minutes=minutes))
        changed.append(data)
    assert changed != batch.entries
    return msgspec.structs.replace(batch, entries=changed)


def _resigned(batch: wire.LogBatch, signer: Signer) -> wire.LogBatch:
    """``batch`` with its checkpoint's text signed by ``signer`` instead."""
    assert batch.checkpoint is not None
    text = batch.checkpoint.decode().split("\n\n")[0] + "\n"
    return msgspec.structs.replace(batch, checkpoint=sign_note(text, signer))


def _counted(metrics: str, origin: str, reason: str) -> float:
    prefix = f'timebank_federation_rejected_total{{peer="{origin}",reason="{reason}"}} '
    return sum(float(line.removeprefix(prefix)) for line in metrics.splitlines() if line.startswith(prefix))


async def test_tampered_entries_and_a_wrong_key_are_refused_counted_and_never_settled(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(hillside):
        async with served(riverside):
            alice = await riverside.open_member("alice")
            bob = await hillside.open_member("bob")
            clearing = await riverside.clearing_account(hillside.origin)
            sent = {await pay_through(riverside, "first", alice, clearing, bob, 10)}
            await settled(riverside, hillside, sent, set())
            held = (await batches(riverside))[-1].end
        async with served(riverside, federation=False):
            transfer = await pay_through(riverside, "lift", alice, clearing, bob, 60)
            sent.add(transfer)
            [signed] = await batches(riverside, after=held)
            assert hillside.client is not None
            before = (await hillside.client.get("/federation/metrics")).text
            # The real entries under a checkpoint riverside never signed, then 600 minutes under its real one.
            await inject(riverside, [_resigned(signed, Signer.generate(riverside.origin))], "impostor")
            await inject(riverside, [_tampered(signed, transfer, 600)], "tampered")

            async def refused() -> bool:
                return await rejected(hillside, riverside.origin) == {"signature": 1, "root": 1}

            await eventually(refused, "hillside refuses both batches, by reason")
            after = (await hillside.client.get("/federation/metrics")).text
            for reason in ("signature", "root"):
                assert _counted(after, riverside.origin, reason) == _counted(before, riverside.origin, reason) + 1
            # Never applied, never settled.
            assert await copy_size(hillside, riverside.origin) == held
            assert await decisions(hillside, riverside.origin) == [*sent - {transfer}]
            assert await hillside.balance(bob) == 10

            # The genuine batch still goes through, and is decided once, for what riverside's log says.
            await inject(riverside, [signed], "genuine")

            async def applied() -> bool:
                return await copy_size(hillside, riverside.origin) == signed.end

            await eventually(applied, "hillside applies the genuine batch")
        async with served(riverside):
            await settled(riverside, hillside, sent, set())
            assert await hillside.balance(bob) == 70
            assert pairing_detail(await audit_pair(riverside, hillside)).endswith(" = 0")
