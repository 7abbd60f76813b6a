"""Each network witnesses the other: C2SP tlog-witness add-checkpoint over NATS and HTTP, cosignatures served
with the checkpoint, and a neighbour that signs two checkpoints that cannot both be true caught in the act."""

from __future__ import annotations

import base64

import httpx

from shared import merkle
from shared.logverify import check_cosignatures
from shared.note import Checkpoint, CosignatureVerifier, Signer, format_checkpoint, sign_note, verify_cosignature
from tests.federation.support import Network, auth, eventually, running


def _linked(riverside: Network, hillside: Network) -> None:
    riverside.peers = [hillside.as_peer(riverside)]
    hillside.peers = [riverside.as_peer(hillside)]


def _note(signer: Signer, size: int, root: bytes) -> bytes:
    return sign_note(format_checkpoint(Checkpoint(signer.name, size, root)), signer)


def _request(old: int, proof: list[bytes], note: bytes) -> bytes:
    return ("\n".join([f"old {old}", *(base64.b64encode(h).decode() for h in proof)]) + "\n\n").encode() + note


async def test_each_network_serves_its_checkpoint_cosigned_by_its_neighbour(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    _linked(riverside, hillside)
    async with running(riverside, hillside):
        await riverside.transfers(12, "witnessed")
        size = await riverside.log_size()
        hillside_witness = hillside.witness.verifier()

        async def cosigned() -> bool:
            assert riverside.client is not None
            note = (await riverside.client.get("/ledger/log/checkpoint")).content
            served_size = int(note.split(b"\n")[1])
            return served_size >= size and check_cosignatures(note, [hillside_witness]).meets(1)

        await eventually(cosigned, "riverside serves its checkpoint with hillside's cosignature")
        status = await riverside.status()
        assert [c["witness"] for c in status["cosigners"]] == [hillside_witness.name]
        assert status["cosigners"][0]["size"] >= size
        # ... and hillside records what it cosigned for riverside.
        [peer] = (await hillside.status())["peers"]
        assert peer["witnessed_size"] >= size


async def test_the_http_witness_answers_as_c2sp_tlog_witness_says_and_keeps_a_fork_as_evidence(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    # Only hillside runs: the checkpoints of "riverside" in this test are made here, with riverside's key.
    hillside.peers = [riverside.as_peer(hillside)]
    async with running(hillside):
        assert hillside.client is not None
        add = "/federation/witness/add-checkpoint"
        # The metrics are the process's: other tests' alerts about riverside count there too.
        forks_before = await fork_alerts(hillside.client, riverside.origin)
        leaves = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(8)]
        root4, root8 = merkle.root(leaves[:4]), merkle.root(leaves)
        first = _note(riverside.signer, 4, root4)

        async def post(body: bytes) -> tuple[int, bytes, str]:
            r = await hillside.client.post(add, content=body)  # type: ignore[union-attr]
            return r.status_code, r.content, r.headers.get("content-type", "")

        assert (await post(b"not a request"))[0] == 400
        stranger = Signer.generate("timebank.test/elsewhere")
        assert (await post(_request(0, [], _note(stranger, 4, root4))))[0] == 404
        impostor = Signer.generate(riverside.origin)
        assert (await post(_request(0, [], _note(impostor, 4, root4))))[0] == 403

        status, body, kind = await post(_request(0, [], first))
        assert (status, kind) == (200, "text/plain; charset=utf-8")
        key = CosignatureVerifier.from_text((await hillside.status())["witness_key"])
        assert verify_cosignature(body.decode(), format_checkpoint(Checkpoint(riverside.origin, 4, root4)), key) > 0

        # The witness moved on to 4: a request from 0 is told where it stands.
        status, body, kind = await post(_request(0, [], _note(riverside.signer, 8, root8)))
        assert (status, body, kind.split(";")[0]) == (409, b"4\n", "text/x.tlog.size")
        # A proof that does not lead from 4 to 8.
        assert (await post(_request(4, [leaves[0]] * 3, _note(riverside.signer, 8, root8))))[0] == 422
        proof = merkle.consistency_proof(4, 8, lambda lo, hi: merkle.root(leaves[lo:hi]))
        assert (await post(_request(4, proof, _note(riverside.signer, 8, root8))))[0] == 200

        # Riverside signs another checkpoint of size 8 with a different root: a fork.
        forked = _note(riverside.signer, 8, merkle.root([*leaves[:7], merkle.leaf_hash(b"x")]))
        assert (await post(_request(8, [], forked)))[0] == 409

        async def alerted() -> bool:
            alerts = (await hillside.status())["alerts"]
            return [(a["origin"], a["kind"]) for a in alerts] == [(riverside.origin, "fork")]

        await eventually(alerted, "hillside raises a fork alert")
        [alert] = (await hillside.status())["alerts"]
        assert alert["second_note"].encode() == forked
        # Until a coordinator acts, hillside cosigns nothing more for riverside.
        assert (await post(_request(8, [], _note(riverside.signer, 8, root8))))[0] == 403
        assert await fork_alerts(hillside.client, riverside.origin) == forks_before + 1


async def fork_alerts(client: httpx.AsyncClient | None, origin: str) -> float:
    """The fork alerts about ``origin`` the federation's metrics have counted."""
    assert client is not None
    prefix = f'timebank_federation_alerts_total{{kind="fork",peer="{origin}"}} '
    lines = (await client.get("/federation/metrics")).text.splitlines()
    return sum(float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix))


async def test_a_coordinator_has_our_witness_cosign_a_log_that_no_one_here_wrote(
    two_networks: tuple[Network, Network],
) -> None:
    _, hillside = two_networks
    elsewhere = Signer.generate("timebank.test/elsewhere")
    logs = "/federation/witness/logs"
    add = "/federation/witness/add-checkpoint"
    leaves = [merkle.leaf_hash(f"elsewhere {i}".encode()) for i in range(3)]
    first = _request(0, [], _note(elsewhere, 3, merkle.root(leaves)))
    async with running(hillside):
        assert hillside.client is not None
        # Unknown to the witness until a coordinator names it.
        assert (await hillside.client.post(add, content=first)).status_code == 404
        named = {"origin": elsewhere.name, "key": elsewhere.verifier().to_text()}
        assert (await hillside.client.post(logs, json=named, headers=auth("auditor"))).status_code == 403
        wrong = {"origin": "timebank.test/other", "key": elsewhere.verifier().to_text()}
        assert (await hillside.client.post(logs, json=wrong, headers=auth("coordinator"))).status_code == 422
        r = await hillside.client.post(logs, json=named, headers=auth("coordinator"))
        assert r.status_code == 201, r.text
        listed = (await hillside.client.get(logs, headers=auth("auditor"))).json()["logs"]
        assert listed == [named]

        r = await hillside.client.post(add, content=first)
        assert r.status_code == 200, r.text
        key = CosignatureVerifier.from_text((await hillside.status())["witness_key"])
        signed = format_checkpoint(Checkpoint(elsewhere.name, 3, merkle.root(leaves)))
        assert verify_cosignature(r.text, signed, key) > 0
        r = await hillside.client.delete(f"{logs}/{elsewhere.name}", headers=auth("coordinator"))
        assert r.status_code == 204, r.text
        assert (await hillside.client.post(add, content=first)).status_code == 404
        assert (
            await hillside.client.delete(f"{logs}/{elsewhere.name}", headers=auth("coordinator"))
        ).status_code == 404
