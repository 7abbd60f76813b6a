"""A neighbour caught signing two checkpoints that cannot both be true stops cosigning and settling with it until a
coordinator resolves the evidence: ``dismiss`` keeps our copy and resumes where it was; ``reset`` drops our copy
and our witness's record, and the log is replicated again from its start, deciding nothing twice."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from services.federation import replicator
from services.node.cli import main
from shared import merkle
from shared.logverify import check_cosignatures
from shared.note import Checkpoint, Signer, format_checkpoint, sign_note
from tests.federation.faults import batches, copy_of, copy_size, decisions, entries, inject, linked
from tests.federation.support import TOKENS, Network, auth, eventually, served
from tests.federation.test_copies import audit_copy


async def _fork(riverside: Network, hillside: Network) -> int:
    """Once hillside's witness has cosigned riverside's log, show it another checkpoint of the same size, signed
    with riverside's key but with another root: the evidence of a fork. The size it happened at."""
    assert hillside.client is not None
    sizes: list[int] = []

    async def witnessed() -> bool:
        # Riverside's log may still grow (acceptances of its payments are recorded as they come back): wait until
        # the witness holds all of it.
        sizes.append(await riverside.log_size())
        [peer] = (await hillside.status())["peers"]
        return bool(peer["witnessed_size"] == sizes[-1])

    await eventually(witnessed, "hillside's witness cosigns riverside's log", within=60)
    size = sizes[-1]
    forged = format_checkpoint(Checkpoint(riverside.origin, size, merkle.leaf_hash(b"another history")))
    body = f"old {size}\n\n".encode() + sign_note(forged, riverside.signer)
    r = await hillside.client.post("/federation/witness/add-checkpoint", content=body)
    assert r.status_code == 409, r.text
    [alert] = (await hillside.status())["alerts"]
    assert (alert["origin"], alert["kind"]) == (riverside.origin, "fork")
    return size


async def _whole_copy(hillside: Network, riverside: Network) -> bool:
    """Whether hillside's copy holds riverside's log entry for entry (riverside's log may still be growing: the
    acceptances of its payments are recorded as they come back)."""
    return (await copy_of(hillside, riverside.origin))[1] == await entries(riverside)


async def _evidence(net: Network) -> list[dict[str, object]]:
    assert net.client is not None
    r = await net.client.get("/federation/evidence", headers=auth("coordinator"))
    assert r.status_code == 200, r.text
    return list(r.json())


async def _cosigned_at(riverside: Network, hillside: Network, size: int) -> bool:
    """Whether riverside serves a checkpoint of at least ``size`` entries that hillside's witness cosigned."""
    assert riverside.client is not None
    note = (await riverside.client.get("/ledger/log/checkpoint")).content
    return int(note.split(b"\n")[1]) >= size and check_cosignatures(note, [hillside.witness.verifier()]).meets(1)


async def _stands_still(riverside: Network, hillside: Network, size: int, bob: str, minutes: int) -> None:
    """While the evidence is open: hillside's copy does not grow, its member ``bob`` is paid nothing more than
    ``minutes``, and riverside's newer checkpoints are not cosigned."""
    await asyncio.sleep(3 * replicator.STOPPED_RETRY_SECONDS)
    assert await copy_size(hillside, riverside.origin) == size
    assert await hillside.balance(bob) == minutes
    assert not await _cosigned_at(riverside, hillside, size + 1)


async def test_dismissed_evidence_keeps_the_copy_and_resumes_cosigning_and_settling(
    two_networks: tuple[Network, Network], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(replicator, "STOPPED_RETRY_SECONDS", 1.0)
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(riverside), served(hillside):
        assert hillside.url is not None
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        forked_at = await _fork(riverside, hillside)
        await eventually(lambda: _copy_at(hillside, riverside, forked_at), "hillside's copy holds the log")
        await riverside.pay_remote("after the fork", alice, hillside, bob, 10)
        await _stands_still(riverside, hillside, forked_at, bob, 0)

        # Only a coordinator sees the evidence and resolves it.
        assert hillside.client is not None
        assert (await hillside.client.get("/federation/evidence", headers=auth("auditor"))).status_code == 403
        body = {"origin": riverside.origin, "action": "dismiss", "reason": "a test checkpoint, not riverside's log"}
        refused = await hillside.client.post("/federation/evidence/resolutions", json=body, headers=auth("auditor"))
        assert refused.status_code == 403
        [open_one] = await _evidence(hillside)
        assert open_one["resolution"] is None

        # The coordinator dismisses it with `timebank peer resolve`.
        peer = ["peer", "--url", hillside.url, "--token", TOKENS["coordinator"]]
        reason = "riverside's coordinator says the second checkpoint was a test key's"
        assert await asyncio.to_thread(main, [*peer, "resolve", riverside.origin, "--dismiss", "--reason", reason]) == 0
        assert f"dismiss: evidence {open_one['id']} against {riverside.origin} resolved" in capsys.readouterr().out
        [resolved] = await _evidence(hillside)
        assert (resolved["id"], resolved["resolution"], resolved["reason"]) == (open_one["id"], "dismiss", reason)
        assert resolved["resolved_at"] is not None
        assert (await hillside.status())["alerts"] == []
        assert await asyncio.to_thread(main, [*peer, "evidence"]) == 0
        assert "dismiss (" in capsys.readouterr().out
        # Nothing is left to resolve.
        again = await hillside.client.post("/federation/evidence/resolutions", json=body, headers=auth("coordinator"))
        assert again.status_code == 404

        # The copy carries on from where it stood, the payment settles, and the witness cosigns again.
        async def paid() -> bool:
            return await hillside.balance(bob) == 10

        await eventually(paid, "the payment made while stopped settles")
        size = await riverside.log_size()
        await eventually(lambda: _cosigned_at(riverside, hillside, size), "hillside cosigns riverside's log again")
        await eventually(lambda: _copy_at(hillside, riverside, size), "hillside's copy catches up")
        await eventually(lambda: _whole_copy(hillside, riverside), "hillside's copy holds all of riverside's log")


async def _copy_at(holder: Network, of: Network, size: int) -> bool:
    return await copy_size(holder, of.origin) >= size


async def test_a_reset_drops_the_copy_and_replicates_the_log_again_from_its_start_deciding_nothing_twice(
    two_networks: tuple[Network, Network], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicator, "STOPPED_RETRY_SECONDS", 1.0)
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(riverside), served(hillside):
        assert riverside.client is not None
        assert hillside.client is not None
        alice = await riverside.open_member("alice")
        bob = await hillside.open_member("bob")
        paid = (await riverside.pay_remote("before the fork", alice, hillside, bob, 10))["id"]

        async def settled() -> bool:
            return await hillside.balance(bob) == 10

        await eventually(settled, "the payment before the fork settles")
        forked_at = await _fork(riverside, hillside)
        await eventually(lambda: _copy_at(hillside, riverside, forked_at), "hillside's copy holds the log")
        await riverside.pay_remote("after the fork", alice, hillside, bob, 5)
        await _stands_still(riverside, hillside, forked_at, bob, 10)

        body = {"origin": riverside.origin, "action": "reset", "reason": "riverside's log forked; start again"}
        r = await hillside.client.post("/federation/evidence/resolutions", json=body, headers=auth("coordinator"))
        assert r.status_code == 200, r.text
        assert r.json()["action"] == "reset"
        # Our copy and our witness's record of riverside's log are gone.
        [peer] = (await hillside.status())["peers"]
        assert (peer["replicated_size"], peer["witnessed_size"]) == (0, 0)
        copy = f"/federation/peers/{riverside.origin}/log"
        assert (await hillside.client.get(f"{copy}/checkpoint")).status_code == 404
        assert (await hillside.status())["alerts"] == []

        # Riverside offers its log to hillside from its start again (its coordinator removes and adds hillside,
        # which makes hillside a new consumer of riverside's log stream).
        r = await riverside.client.delete(f"/federation/peers/{hillside.origin}", headers=auth("coordinator"))
        assert r.status_code == 204, r.text
        again = msgspec.to_builtins(hillside.as_peer(riverside))
        r = await riverside.client.post("/federation/peers", json=again, headers=auth("coordinator"))
        assert r.status_code == 201, r.text

        size = await riverside.log_size()
        await eventually(lambda: _copy_at(hillside, riverside, size), "hillside replicates riverside's log again")
        await eventually(lambda: _whole_copy(hillside, riverside), "hillside's copy holds all of riverside's log")

        async def all_paid() -> bool:
            return await hillside.balance(bob) == 15

        await eventually(all_paid, "the payment made while stopped settles")
        # The payment decided before the reset is not decided again from the copy replicated anew.
        decided = await decisions(hillside, riverside.origin)
        assert decided.count(paid) == 1
        assert len(decided) == len(set(decided)) == 2
        await eventually(lambda: _cosigned_at(riverside, hillside, size), "hillside's witness cosigns from scratch")
        status, report = await audit_copy(hillside, riverside)
        assert status == 0, report
        [resolved] = await _evidence(hillside)
        assert (resolved["resolution"], resolved["reason"]) == ("reset", body["reason"])


async def test_a_neighbour_rekeyed_with_another_history_is_a_fork_to_resolve_and_replication_goes_on(
    two_networks: tuple[Network, Network],
) -> None:
    """Hillside takes riverside's new log key while its copy holds checkpoints signed with the old one. A batch of
    entries the copy holds, under a checkpoint with the new key and another root, is kept as fork evidence (the
    copy's note is not checked again under the new key), and hillside's replicator keeps reading."""
    riverside, hillside = two_networks
    linked(riverside, hillside)
    async with served(riverside), served(hillside):
        assert hillside.client is not None
        await riverside.transfers(3, "before")
        size = await riverside.log_size()
        await eventually(lambda: _copy_at(hillside, riverside, size), "hillside's copy holds the log")
        first = next(b for b in await batches(riverside) if b.checkpoint is not None)

        new_key = Signer.generate(riverside.origin)
        changed = msgspec.to_builtins(riverside.as_peer(hillside, log_key=new_key.verifier().to_text()))
        r = await hillside.client.post("/federation/peers", json=changed, headers=auth("coordinator"))
        assert r.status_code == 201, r.text
        other = format_checkpoint(Checkpoint(riverside.origin, first.end, merkle.leaf_hash(b"another history")))
        forged = msgspec.structs.replace(first, checkpoint=sign_note(other, new_key))
        await inject(riverside, [forged], "rekeyed")

        async def alerted() -> bool:
            return [a["detail"] for a in (await hillside.status())["alerts"]] == [
                f"two roots for size {first.end} on the log stream"
            ]

        await eventually(alerted, "hillside keeps the two notes as evidence")
        [peer] = (await hillside.status())["peers"]
        contact = peer["last_contact_at"]

        async def still_reading() -> bool:
            [peer] = (await hillside.status())["peers"]
            return bool(peer["last_contact_at"] != contact)

        await eventually(still_reading, "hillside's replicator goes on reading riverside's stream")
