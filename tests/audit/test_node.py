"""`timebank audit` against a real served node: a clean pass, and what an operator can do to the database."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from services.ledger.tlog import CheckpointSigner
from services.node.processes import free_port
from shared import merkle, tiles
from shared.note import Signer, write_signer_key
from tests.audit.conftest import Node, populate
from tests.audit.support import audit, edit_entry
from tests.ledger.conftest import ORIGIN, TOKENS, auth, ledger_settings

Capture = pytest.CaptureFixture[str]


async def rewrite_in_database(node: Node, index: int, **changes: object) -> None:
    """What an operator with the database and the key can do: rewrite an entry, rebuild the tiles, re-sign."""
    conn = await asyncpg.connect(node.database_url)
    try:
        await conn.execute("SET session_replication_role = replica")  # the append-only triggers stay silent
        entries = [bytes(r["data"]) for r in await conn.fetch("SELECT data FROM ledger.entries ORDER BY idx")]
        entries[index] = edit_entry(entries[index], **changes)
        await conn.execute("UPDATE ledger.entries SET data = $2 WHERE idx = $1", index, entries[index])
        edge = tiles.RightEdge()
        for entry in entries:
            edge.append(merkle.leaf_hash(entry))
        await conn.execute("DELETE FROM ledger.tiles")
        await conn.executemany("INSERT INTO ledger.tiles (level, idx, hashes) VALUES ($1, $2, $3)", edge.take_dirty())
        root = edge.root()
        await conn.execute("UPDATE ledger.head SET root = $1", root)
        note = CheckpointSigner(node.signer).sign(len(entries), root)
        await conn.execute("UPDATE ledger.checkpoints SET note = $2 WHERE size = $1", len(entries), note)
    finally:
        await conn.close()


def memo_changes(node: Node) -> tuple[int, dict[str, object]]:
    """A transfer deep in the log, and a change to it that keeps every balance and limit as it was."""
    r = httpx.get(node.url + "/log/entries", params={"start": 200})
    for item in r.json()["entries"]:
        if b'"ledger.transfer.v1"' in base64.b64decode(item["data"]):
            return int(item["index"]), {"memo_digest": "ee" * 32}
    raise AssertionError("no transfer after entry 200")


def test_audit_of_a_served_node_passes_and_remembers_its_checkpoint(
    node: Node, tmp_path: Path, capsys: Capture
) -> None:
    done = audit(capsys, tmp_path, node.url, "--vkey", node.vkey, "--cache", str(tmp_path / "cache"))
    assert done.status == 0, done.out
    assert done.failed() == set()
    size = done.report["checkpoint"]["size"]
    assert done.report["entries"] == size
    assert done.report["balances_size"] == size
    state = msgspec.json.decode((tmp_path / "state.json").read_bytes())
    [seen] = state["logs"][node.vkey]["checkpoints"]
    assert (seen["size"], seen["root"]) == (size, done.report["checkpoint"]["root"])
    assert seen["source"] == node.url


def test_second_audit_of_a_grown_log_is_consistent_with_the_first(
    own_node: Node, tmp_path: Path, capsys: Capture
) -> None:
    args = (own_node.url, "--vkey", own_node.vkey, "--cache", str(tmp_path / "cache"))
    first = audit(capsys, tmp_path, *args)
    assert first.status == 0, first.out
    asyncio.run(populate(own_node.url, members=3, transfers=80, seed=9, run="b"))
    second = audit(capsys, tmp_path, *args)
    assert second.status == 0, second.out
    assert second.report["checkpoint"]["size"] > first.report["checkpoint"]["size"]
    assert "1 checkpoint(s) seen before" in second.check("log.consistency")["detail"]
    light = audit(capsys, tmp_path, own_node.url, "--vkey", own_node.vkey, "--checkpoint-only")
    assert light.status == 0, light.out
    assert "consistency proofs" in light.check("log.consistency")["detail"]


def test_log_rewritten_between_two_audits_is_caught_through_the_state_file(
    own_node: Node, tmp_path: Path, capsys: Capture
) -> None:
    args = (own_node.url, "--vkey", own_node.vkey, "--cache", str(tmp_path / "cache"))
    assert audit(capsys, tmp_path, *args).status == 0
    index, changes = memo_changes(own_node)
    asyncio.run(rewrite_in_database(own_node, index, **changes))

    # A fresh download: everything the node serves now agrees with its new, validly signed checkpoint...
    fresh = audit(
        capsys, tmp_path, own_node.url, "--vkey", own_node.vkey, "--no-cache", "--state", str(tmp_path / "other.json")
    )
    assert fresh.status == 0, fresh.out
    # ...but not with the checkpoint this auditor saw before the rewrite.
    done = audit(capsys, tmp_path, own_node.url, "--vkey", own_node.vkey, "--no-cache")
    assert done.status == 1
    assert done.failed() == {"log.consistency"}
    # Fetching only the new checkpoint catches it too: the node has no valid consistency proof to offer.
    light = audit(capsys, tmp_path, own_node.url, "--vkey", own_node.vkey, "--checkpoint-only")
    assert light.status == 1
    assert light.failed() == {"log.consistency"}
    # And the cache still holds the entries as they were: hashed into the new root, they name the rewritten one.
    cached = audit(capsys, tmp_path, *args, "--no-state")
    assert cached.status == 1
    assert index in cached.indexes("log.entries")


def test_served_balances_that_differ_from_the_entries_are_caught_by_account(
    own_node: Node, tmp_path: Path, capsys: Capture
) -> None:
    account = own_node.accounts[3]

    async def forge() -> None:
        conn = await asyncpg.connect(own_node.database_url)
        try:
            # An extra transfer row, with no entry behind it: the account's latest balance (what the node
            # serves) is now 45 minutes higher.
            size = await conn.fetchval("SELECT size FROM ledger.head")
            balance = await conn.fetchval("SELECT ledger.balance_before($1, $2)", account, size)
            await conn.execute(
                "INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, payer_balance, "
                "payee_balance) VALUES ('tr_forged', $2, '\\x00', 'nobody', $1, 45, 0, $3)",
                account,
                size - 1 + 10**9,
                balance + 45,
            )
        finally:
            await conn.close()

    asyncio.run(forge())
    done = audit(capsys, tmp_path, own_node.url, "--vkey", own_node.vkey, "--no-cache")
    assert done.status == 1
    assert done.failed() == {"ledger.balances", "ledger.zero_sum"}
    [failure] = done.check("ledger.balances")["failures"]
    assert failure["account"] == account


def test_entry_is_included_under_the_signed_checkpoint_by_index_and_by_saved_proof(
    node: Node, tmp_path: Path, capsys: Capture
) -> None:
    by_index = audit(capsys, tmp_path, node.url, "--vkey", node.vkey, "--entry", "5", "--entry", "300")
    assert by_index.status == 0, by_index.out
    assert by_index.report["mode"] == "entry"
    assert by_index.report["entries"] == 2

    proof = tmp_path / "300.tlog-proof"
    proof.write_bytes(httpx.get(node.url + "/log/proof/bundle", params={"index": 300}).content)
    offline = audit(capsys, tmp_path, "--vkey", node.vkey, "--proof", str(proof))
    assert offline.status == 0, offline.out
    assert "entry 300" in offline.check("entry.inclusion")["detail"]

    lines = proof.read_text().split("\n")
    entry = base64.b64decode(lines[1].removeprefix("extra "))
    lines[1] = "extra " + base64.b64encode(edit_entry(entry, memo_digest="aa" * 32)).decode()
    forged = tmp_path / "forged.tlog-proof"
    forged.write_text("\n".join(lines))
    caught = audit(capsys, tmp_path, "--vkey", node.vkey, "--proof", str(forged))
    assert caught.status == 1
    assert caught.failed() == {"entry.inclusion"}
    assert caught.indexes("entry.inclusion") == [300]


def test_entry_of_an_export_is_included_under_its_checkpoint(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    done = audit(capsys, tmp_path, str(exported), "--vkey", node.vkey, "--entry", "257")
    assert done.status == 0, done.out
    assert done.report["entries"] == 1


def test_download_resumes_from_the_cache(node: Node, tmp_path: Path, capsys: Capture) -> None:
    cache = tmp_path / "cache"
    args = (node.url, "--vkey", node.vkey, "--cache", str(cache), "--no-state")
    assert audit(capsys, tmp_path, *args).status == 0
    bundles = sorted((cache / "tile" / "entries").rglob("*"))
    bundles = [b for b in bundles if b.is_file()]
    assert len(bundles) >= 3
    kept, lost = bundles[0], bundles[1]
    stamp = kept.stat().st_mtime_ns
    lost.unlink()  # as if the first audit had been interrupted there
    assert audit(capsys, tmp_path, *args).status == 0
    assert lost.exists()
    assert kept.stat().st_mtime_ns == stamp  # not fetched again


def timebank(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.node.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_STATE_HOME": "/nonexistent-state", "XDG_CACHE_HOME": "/nonexistent-cache"},
        timeout=120,
    )


def test_command_exits_0_and_prints_the_json_report_on_stdout(node: Node, tmp_path: Path) -> None:
    done = timebank("audit", node.url, "--vkey", node.vkey, "--no-state", "--no-cache", "--json", "-")
    assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout)
    assert report["ok"] is True
    assert {c["id"] for c in report["checks"]} >= {"checkpoint.signature", "log.entries", "ledger.balances"}
    assert "PASS" in done.stderr  # the summary moves to stderr


def test_command_exits_2_when_it_cannot_audit(node: Node, tmp_path: Path) -> None:
    bad_key = timebank("audit", node.url, "--vkey", "not-a-key", "--no-state")
    assert bad_key.returncode == 2
    assert "bad key" in bad_key.stderr
    closed = httpx.URL(node.url).copy_with(port=1)
    unreachable = timebank("audit", str(closed), "--vkey", node.vkey, "--no-state", "--no-cache")
    assert unreachable.returncode == 2
    assert "cannot read" in unreachable.stderr


def test_audit_finds_the_ledger_under_the_root_of_a_node_that_serves_both_services(
    database_url: str, server_tmp_path: Path, capsys: Capture
) -> None:
    signer = Signer.generate(ORIGIN)
    write_signer_key(server_tmp_path / "network.key", signer)
    port = free_port()
    config = server_tmp_path / "node.toml"
    settings = {
        "origin": ORIGIN,
        "key_file": str(server_tmp_path / "network.key"),
        "database": {"url": database_url},
        "http": {"port": port},
        "ledger": {"tokens": msgspec.to_builtins(ledger_settings().ledger.tokens)},
        "exchange": {"ledger_token": TOKENS["service"]},
    }
    config.write_bytes(msgspec.toml.encode(settings))
    log = (server_tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.node.cli", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (server_tmp_path / "serve.log").read_text()
            try:
                r = httpx.post(root + "/ledger/accounts", json={"key": "only"}, headers=auth("coordinator"))
                if r.status_code == 201:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.2)
        done = audit(capsys, server_tmp_path, root, "--vkey", signer.verifier().to_text(), "--no-cache")
        assert done.status == 0, done.out
        assert done.report["source"] == root + "/ledger"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
