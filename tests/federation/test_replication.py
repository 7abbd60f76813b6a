"""Two real networks, each with its own database and nats-server: one keeps a verified copy of the other's log."""

from __future__ import annotations

import base64

from shared.logverify import TreeState, verify_batch, verify_checkpoint
from shared.note import Signer
from tests.federation.support import Network, eventually, running


async def _copy_size(net: Network, origin: str) -> int:
    peers = (await net.status())["peers"]
    return next(p["replicated_size"] for p in peers if p["origin"] == origin)


async def test_a_neighbour_keeps_a_verified_copy_of_our_log(two_networks: tuple[Network, Network]) -> None:
    riverside, hillside = two_networks
    hillside.peers = [riverside.as_peer(hillside)]
    riverside.peers = [hillside.as_peer(riverside)]
    async with running(riverside, hillside):
        await riverside.transfers(40, "first")
        size = await riverside.log_size()
        await eventually(lambda: _at_least(hillside, riverside.origin, size), "hillside holds riverside's log")

        # What hillside serves as riverside's log verifies under riverside's key, entry by entry.
        assert hillside.client is not None
        note = (await hillside.client.get(f"/federation/peers/{riverside.origin}/log/checkpoint")).content
        checkpoint = verify_checkpoint(note, riverside.signer.verifier())
        assert checkpoint.size >= size
        served = await hillside.client.get(
            f"/federation/peers/{riverside.origin}/log/entries", params={"start": 0, "end": checkpoint.size}
        )
        entries = [base64.b64decode(e["data"]) for e in served.json()["entries"]]
        assert verify_batch(TreeState(), 0, entries, checkpoint).size == checkpoint.size
        assert riverside.client is not None
        own = await riverside.client.get("/ledger/log/entries", params={"start": 0, "end": checkpoint.size})
        assert [base64.b64decode(e["data"]) for e in own.json()["entries"]] == entries

        # It keeps up as the log grows.
        await riverside.transfers(10, "second")
        grown = await riverside.log_size()
        await eventually(lambda: _at_least(hillside, riverside.origin, grown), "hillside follows riverside")


async def _at_least(net: Network, origin: str, size: int) -> bool:
    return await _copy_size(net, origin) >= size


async def test_batches_signed_with_another_key_are_refused_counted_and_never_applied(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    # Hillside was told a key riverside does not sign with: every batch riverside sends fails the signature.
    impostor = Signer.generate(riverside.origin)
    hillside.peers = [riverside.as_peer(hillside, log_key=impostor.verifier().to_text())]
    riverside.peers = [hillside.as_peer(riverside)]
    async with running(riverside, hillside):
        await riverside.transfers(5, "signed")

        async def refused() -> bool:
            peer = (await hillside.status())["peers"][0]
            return any(r["reason"] == "signature" and r["count"] >= 1 for r in peer["rejected"])

        await eventually(refused, "hillside counts the bad signature")
        assert await _copy_size(hillside, riverside.origin) == 0
        assert hillside.client is not None
        assert (await hillside.client.get(f"/federation/peers/{riverside.origin}/log/checkpoint")).status_code == 404
        metrics = (await hillside.client.get("/federation/metrics")).text
        assert f'timebank_federation_rejected_total{{peer="{riverside.origin}",reason="signature"}}' in metrics
