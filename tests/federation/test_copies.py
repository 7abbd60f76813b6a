"""A network serves its verified copy of a neighbour's log like its own log: the neighbour's signed checkpoint,
entries, C2SP tlog-tiles (hash tiles and entry bundles, full and partial), inclusion and consistency proofs and
tlog-proof bundles, and balances. An auditor checks them against the neighbour's key alone, and `timebank audit`
passes pointed at the copy."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from services.audit.signatures import parse_proof_bundle
from services.federation import store
from services.node.cli import main
from shared import merkle, tiledlog, tiles
from shared.db import migrate
from shared.logverify import (
    TreeState,
    root_from_tiles,
    verify_batch,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from shared.note import Checkpoint
from tests.federation.faults import copy_size, entries, linked
from tests.federation.support import Network, eventually, served


async def _caught_up(riverside: Network, hillside: Network) -> int:
    """Wait until hillside's copy holds all of riverside's log; its size."""
    size = await riverside.log_size()

    async def holds_all() -> bool:
        return await copy_size(hillside, riverside.origin) == size

    await eventually(holds_all, "hillside's copy holds riverside's whole log", within=60)
    return size


async def audit_copy(holder: Network, of: Network) -> tuple[int, dict[str, Any]]:
    """``timebank audit`` of ``holder``'s copy of ``of``'s log, with ``of``'s key: exit status and JSON report."""
    assert holder.url is not None
    with tempfile.TemporaryDirectory(prefix="timebank-copy-audit-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            "audit", f"{holder.url}/federation/peers/{of.origin}", "--vkey", of.signer.verifier().to_text(),
            "--no-state", "--no-cache", "--jobs", "1", "--quiet", "--json", str(report),
        ]  # fmt: skip
        status = await asyncio.to_thread(main, command)
        return status, json.loads(report.read_bytes())


async def test_the_copy_serves_tiles_and_proofs_that_verify_against_the_neighbours_signed_checkpoint(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    key = riverside.signer.verifier()
    async with served(riverside), served(hillside):
        assert hillside.client is not None
        assert riverside.client is not None
        copy = f"/federation/peers/{riverside.origin}/log"
        await riverside.transfers(5, "first")
        first_size = await _caught_up(riverside, hillside)
        first = verify_checkpoint((await hillside.client.get(f"{copy}/checkpoint")).content, key)
        assert first.size == first_size
        # Past one full tile of 256, so that the copy has full and partial tiles, at two levels.
        await riverside.transfers(280, "more")
        size = await _caught_up(riverside, hillside)
        assert size > 256 + first_size
        answer = await hillside.client.get(f"{copy}/checkpoint")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"  # one charset, as Go expects
        note = answer.content
        signed = verify_checkpoint(note, key)
        assert signed.size == size
        log = await entries(riverside)

        # Every hash tile and entry bundle of the tree, as riverside serves its own, and they make the signed root.
        tile_set: dict[tuple[int, int], bytes] = {}
        for level, index, width in tiles.tile_widths(size):
            path = tiles.tile_path(level, index, width)
            r = await hillside.client.get(f"{copy}/{path}")
            assert r.status_code == 200, (path, r.text)
            assert r.content == (await riverside.client.get(f"/ledger/log/{path}")).content, path
            tile_set[(level, index)] = r.content
        assert {level for level, _ in tile_set} == {0, 1}
        assert root_from_tiles(tile_set, size) == signed.root_hash
        served_entries: list[bytes] = []
        for index in range((size + 255) // 256):
            width = min(256, size - index * 256)
            r = await hillside.client.get(f"{copy}/{tiles.entries_path(index, width)}")
            assert r.status_code == 200, r.text
            served_entries.extend(tiles.split_entry_bundle(r.content))
        assert served_entries == log
        assert b"".join(merkle.leaf_hash(e) for e in log[:256]) == tile_set[(0, 0)]
        # A tile the tree does not have yet.
        assert (await hillside.client.get(f"{copy}/{tiles.tile_path(0, size // 256 + 1, 1)}")).status_code == 404
        assert (await hillside.client.get(f"{copy}/{tiles.entries_path(size // 256, 256)}")).status_code == 404

        # Inclusion proofs, checked as the auditor checks them.
        for index in (0, 255, 256, size - 1):
            r = await hillside.client.get(f"{copy}/proof/inclusion", params={"index": index, "size": size})
            assert r.status_code == 200, r.text
            proof = r.json()
            assert proof["root"] == base64.b64encode(signed.root_hash).decode()
            verify_inclusion(log[index], index, [base64.b64decode(h) for h in proof["proof"]], signed)
        # A consistency proof from the first checkpoint the copy verified to the latest.
        r = await hillside.client.get(f"{copy}/proof/consistency", params={"old": first.size, "new": size})
        assert r.status_code == 200, r.text
        consistency = r.json()
        verify_consistency(
            first.size,
            first.root_hash,
            size,
            signed.root_hash,
            [base64.b64decode(h) for h in consistency["proof"]],
        )
        # A tlog-proof bundle, under the neighbour's checkpoint.
        r = await hillside.client.get(f"{copy}/proof/bundle", params={"index": 260})
        assert r.status_code == 200, r.text
        bundle = parse_proof_bundle(r.text)
        assert (bundle.entry, bundle.index, bundle.note) == (log[260], 260, note)
        verify_inclusion(log[260], 260, bundle.proof, verify_checkpoint(bundle.note, key))
        # Beyond the copy, or asked wrongly: refused as our ledger refuses.
        beyond = {"index": 0, "size": size + 1}
        too_far = await hillside.client.get(f"{copy}/proof/inclusion", params=beyond)
        theirs = await riverside.client.get("/ledger/log/proof/inclusion", params=beyond)
        assert too_far.status_code == theirs.status_code == 422
        assert f"(its size is {size})" in too_far.json()["detail"]
        assert (await hillside.client.get(f"{copy}/proof/inclusion", params={"index": 0})).status_code == 422
        unknown = await hillside.client.get("/federation/peers/timebank.test/nowhere/log/tile/0/000")
        assert unknown.status_code == 404

        # The balances the copy's entries add up to are the ones riverside serves for its log.
        balances = (await hillside.client.get(f"{copy}/balances")).json()
        assert balances == (await riverside.client.get("/ledger/log/balances")).json()
        assert balances["size"] == size

        # The auditor, pointed at the copy, verifies it whole.
        status, report = await audit_copy(hillside, riverside)
        assert status == 0, json.dumps(report, indent=1)[:4000]
        assert report["ok"] is True
        assert report["checkpoint"]["size"] == report["entries"] == size
        assert report["balances_size"] == size


def _grow(tree: TreeState, entries: list[bytes], everything: list[bytes]) -> TreeState:
    return verify_batch(
        tree,
        tree.size,
        entries,
        Checkpoint("timebank.test/old", len(everything), merkle.root([merkle.leaf_hash(e) for e in everything])),
    )


async def test_a_copy_stored_before_tiles_were_kept_has_them_rebuilt_when_it_grows(database_url: str) -> None:
    origin = "timebank.test/old"
    log = [f"entry {i}".encode() for i in range(700)]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "federation", store.MIGRATIONS)
        empty = (await store.replica(conn, origin)).tree
        first = _grow(empty, log[:300], log[:300])
        assert await store.append_verified(conn, origin, empty, first, [(300, b"note 300")], log[:300])
        # As a copy stored by the version before tiles: entries, and no tiles.
        await conn.execute("DELETE FROM federation.tiles WHERE origin = $1", origin)
        second = _grow(first, log[300:], log)
        # Not at the size claimed: nothing moves.
        assert not await store.append_verified(conn, origin, empty, second, [(700, b"note 700")], log[300:])
        assert await store.append_verified(conn, origin, first, second, [(700, b"note 700")], log[300:])
        copy = store.CopyTiles(conn, origin)
        held = await copy.tiles({(level, index) for level, index, _ in tiles.tile_widths(700)})
        assert root_from_tiles(held, 700) == merkle.root([merkle.leaf_hash(e) for e in log])
        assert await tiledlog.root_at(copy, 300) == merkle.root([merkle.leaf_hash(e) for e in log[:300]])
    finally:
        await conn.close()
