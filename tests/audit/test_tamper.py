"""Every way an operator could tamper with an exported log is caught and named; an untouched log passes.

Each test copies a real exported log (real ledger, real PostgreSQL, `timebank export`), changes its files the
way the scenario says (re-signing with the network's real key where the scenario needs it), and audits the copy.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.ledger.entries import MAX_MINUTES, AccountOpened, LimitsChanged, Transfer, entry_decoder
from shared import tiles
from shared.note import CosignatureSigner, Signer
from tests.audit.conftest import Node
from tests.audit.support import (
    audit,
    copy_export,
    edit_entry,
    read_entries,
    rewrite,
    sign_checkpoint,
    write_bundles,
    write_tiles,
)

Capture = pytest.CaptureFixture[str]


def transfers(entries: list[bytes]) -> list[tuple[int, Transfer]]:
    out = []
    for i, data in enumerate(entries):
        entry = entry_decoder.decode(data)
        if isinstance(entry, Transfer):
            out.append((i, entry))
    return out


def test_untouched_export_passes_every_check(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    done = audit(capsys, tmp_path, str(exported), "--vkey", node.vkey)
    assert done.status == 0, done.out
    assert done.report["ok"] is True
    assert done.failed() == set()
    size = len(read_entries(exported))
    assert done.report["entries"] == size
    for check in ("checkpoint.signature", "log.entries", "log.tiles", "log.consistency", "ledger.balances"):
        assert done.check(check)["status"] == "pass", done.out
    assert "PASS" in done.out


def test_changed_entry_bytes_are_caught_at_their_index(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    index, transfer = transfers(entries)[300]
    entries[index] = edit_entry(entries[index], minutes=transfer.minutes + 1)
    write_bundles(log, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert "log.entries" in done.failed()
    assert done.indexes("log.entries") == [index]
    assert index in done.indexes("log.tiles")
    assert f"entry {index}" in done.out


def test_dropped_entry_is_caught_at_its_index(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    size = len(entries)
    del entries[400]
    write_bundles(log, entries, size)  # the bundles still claim the checkpoint's size
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert "log.entries" in done.failed()
    assert 400 in done.indexes("log.entries")
    assert all(i >= 256 for i in done.indexes("log.entries"))


def test_two_reordered_entries_are_caught_at_the_first_of_them(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    entries[100], entries[500] = entries[500], entries[100]
    write_bundles(log, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert done.indexes("log.entries") == [100, 500]


def test_history_rewritten_and_resigned_with_the_real_key_is_caught_by_the_state_file(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    assert audit(capsys, tmp_path, str(log), "--vkey", node.vkey).status == 0  # remembered in the state file
    entries = read_entries(log)
    index, _ = transfers(entries)[200]
    # A quiet rewrite: the memo digest of one transfer changes, every balance and limit stays as it was.
    entries[index] = edit_entry(entries[index], memo_digest="ab" * 32)
    rewrite(log, node.signer, entries)

    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert done.failed() == {"log.consistency"}
    assert "rewritten" in done.check("log.consistency")["failures"][0]["message"]
    # The same rewritten log, audited by someone who never saw it before, looks fine: only memory catches it.
    assert audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state").status == 0


def test_history_rewritten_and_extended_is_caught_with_the_range_it_hides_in(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    # Two earlier audits saw the log at 300 entries and at its full size.
    rewrite(log, node.signer, entries[:300])
    assert audit(capsys, tmp_path, str(log), "--vkey", node.vkey).status == 0
    rewrite(log, node.signer, entries)
    assert audit(capsys, tmp_path, str(log), "--vkey", node.vkey).status == 0
    index, _ = transfers(entries)[-20]
    entries[index] = edit_entry(entries[index], memo_digest="cd" * 32)
    rewrite(log, node.signer, [*entries, *entries[-3:]][: len(entries)])
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.failed() == {"log.consistency"}
    assert done.indexes("log.consistency") == [300]
    assert f"entries 300 to {len(entries) - 1:,}" in done.check("log.consistency")["failures"][0]["message"]


def test_checkpoint_signed_with_a_wrong_key_is_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    impostor = Signer.generate(node.signer.name)
    root = write_tiles(log, entries)
    sign_checkpoint(log, impostor, len(entries), root)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert "checkpoint.signature" in done.failed()
    message = done.check("checkpoint.signature")["failures"][0]["message"]
    assert f"{impostor.key_id:08x}" in message


def test_stripped_cosignature_is_caught(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    witnesses = [CosignatureSigner.generate(f"witness.test/{n}") for n in ("a", "b")]
    vkeys = [arg for w in witnesses for arg in ("--witness", w.verifier().to_text())]
    rewrite(log, node.signer, entries, *witnesses)
    both = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, *vkeys, "--no-state")
    assert both.status == 0, both.out
    assert both.check("checkpoint.witnesses")["status"] == "pass"

    note = (log / "checkpoint").read_text().splitlines(keepends=True)
    (log / "checkpoint").write_text("".join(line for line in note if not line.startswith("— witness.test/b ")))
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, *vkeys, "--no-state")
    assert done.status == 1
    assert done.failed() == {"checkpoint.witnesses"}
    assert "witness.test/b" in done.check("checkpoint.witnesses")["failures"][0]["message"]
    # One of two is enough when the auditor asks for one.
    one = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, *vkeys, "--witnesses-required", "1", "--no-state")
    assert one.status == 0, one.out


def test_balances_that_differ_from_the_entries_are_caught_by_account(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    balances = json.loads((log / "balances.json").read_text())
    richest = max(balances["accounts"], key=lambda a: a["balance"])
    poorest = min(balances["accounts"], key=lambda a: a["balance"])
    richest["balance"] += 60
    poorest["balance"] -= 60  # the served balances still sum to zero
    (log / "balances.json").write_text(json.dumps(balances))
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.status == 1
    assert done.failed() == {"ledger.balances"}
    named = {f["account"] for f in done.check("ledger.balances")["failures"]}
    assert named == {richest["id"], poorest["id"]}


def test_served_balances_that_do_not_sum_to_zero_are_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    balances = json.loads((log / "balances.json").read_text())
    balances["accounts"][0]["balance"] += 1
    (log / "balances.json").write_text(json.dumps(balances))
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey)
    assert done.failed() == {"ledger.balances", "ledger.zero_sum"}


def test_resigned_transfer_past_a_floor_is_caught_at_its_index(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    index, transfer = transfers(entries)[50]
    entries[index] = edit_entry(entries[index], minutes=20_000)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.limits" in done.failed()
    assert done.indexes("ledger.limits")[0] == index
    assert transfer.payer in done.check("ledger.limits")["failures"][0]["message"]


def test_resigned_duplicate_transfer_id_is_caught(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    (first, original), (second, _) = transfers(entries)[10], transfers(entries)[11]
    entries[second] = edit_entry(entries[second], id=original.id)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.unique_ids" in done.failed()
    assert done.indexes("ledger.unique_ids") == [second]
    assert f"entry {first}" in done.check("ledger.unique_ids")["failures"][0]["message"]


def test_resigned_reversals_of_nothing_or_twice_are_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    reversals = [(i, t) for i, t in transfers(entries) if t.reverses is not None]
    assert len(reversals) >= 2
    (i1, r1), (i2, _) = reversals[0], reversals[1]
    entries[i1] = edit_entry(entries[i1], reverses="tr_" + "0" * 32)
    entries[i2] = edit_entry(entries[i2], reverses=r1.reverses)
    later, _ = transfers(entries)[-1]
    entries[later] = edit_entry(entries[later], reverses=transfers(entries)[-1][1].id)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.reversals" in done.failed()
    found = done.indexes("ledger.reversals")
    assert i1 in found
    assert i2 in found
    assert later in found


def test_resigned_transfer_from_an_account_never_opened_is_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    index, _ = transfers(entries)[5]
    entries[index] = edit_entry(entries[index], payer="acct_" + "f" * 20)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.well_formed" in done.failed()
    assert done.indexes("ledger.well_formed") == [index]


def test_resigned_entry_that_is_not_a_ledger_entry_is_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    entries[7] = b'{"type":"ledger.transfer.v1","minutes":"lots"}'
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.well_formed" in done.failed()
    assert done.indexes("ledger.well_formed")[0] == 7


def test_entries_that_only_decode_when_run_together_are_caught(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    """Two entries that are not JSON alone but parse as two entries side by side must not pass as valid."""
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    account = json.loads(entries[3])["account"].encode()
    limits = b'{"type":"ledger.account.limits.v1","at":"2024-01-01T00:00:00Z","account":"%s","floor":-600' % account
    # Side by side, "A, B" reads as two limits entries: the first ends inside A, the second spans both.
    entries[20] = limits + b"}," + limits + b',"x":[{}'
    entries[21] = b"{}]}"
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert "ledger.well_formed" in done.failed()
    assert done.indexes("ledger.well_formed")[:2] == [20, 21]


def test_missing_hash_tile_is_caught(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    log = copy_export(exported, tmp_path)
    (log / tiles.tile_path(0, 1)).unlink()
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert done.failed() == {"log.tiles"}
    assert done.indexes("log.tiles") == [256]


def test_a_changed_hash_in_a_stored_tile_is_caught(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    # The entries are intact; the tile the node would build proofs from lies about leaf 256 + 7.
    log = copy_export(exported, tmp_path)
    path = log / tiles.tile_path(0, 1)
    tile = bytearray(path.read_bytes())
    tile[7 * 32] ^= 0xFF
    path.write_bytes(bytes(tile))
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert done.failed() == {"log.tiles"}
    assert done.indexes("log.tiles") == [256 + 7]


def test_forged_cosignature_is_caught(node: Node, exported: Path, tmp_path: Path, capsys: Capture) -> None:
    log = copy_export(exported, tmp_path)
    witness = CosignatureSigner.generate("witness.test/a")
    rewrite(log, node.signer, read_entries(log), witness)
    lines = (log / "checkpoint").read_text().splitlines(keepends=True)
    forged = []
    for line in lines:
        if line.startswith("— witness.test/a "):
            raw = bytearray(base64.b64decode(line.split(" ")[2]))
            raw[-1] ^= 1  # same key id and timestamp, one bit of the signature changed
            line = f"— witness.test/a {base64.b64encode(bytes(raw)).decode()}\n"
        forged.append(line)
    (log / "checkpoint").write_text("".join(forged))
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--witness", witness.verifier().to_text())
    assert done.status == 1
    assert done.failed() == {"checkpoint.witnesses"}
    assert "does not verify" in done.check("checkpoint.witnesses")["failures"][0]["message"]


def _replay(entries: list[bytes]) -> list[tuple[dict[str, tuple[int, int | None]], dict[str, int]]]:
    """Every account's (floor, ceiling) and balance before each entry, and after the last, replayed by hand."""
    limits: dict[str, tuple[int, int | None]] = {}
    balances: dict[str, int] = {}
    states = []
    for data in entries:
        states.append((dict(limits), dict(balances)))
        entry = entry_decoder.decode(data)
        if isinstance(entry, AccountOpened | LimitsChanged):
            limits[entry.account] = (entry.floor, entry.ceiling)
            balances.setdefault(entry.account, 0)
        elif isinstance(entry, Transfer):
            balances[entry.payer] -= entry.minutes
            balances[entry.payee] += entry.minutes
    states.append((limits, balances))
    return states


def test_resigned_transfer_one_minute_above_a_ceiling_is_caught_and_names_the_payee(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    before = _replay(entries)
    for index, transfer in transfers(entries):
        limits, balances = before[index]
        ceiling = limits[transfer.payee][1]
        if ceiling is None or limits[transfer.payer][1] is not None:
            continue
        minutes = ceiling + 1 - balances[transfer.payee]  # the payee ends one minute above its ceiling
        if minutes > 0 and balances[transfer.payer] - minutes >= limits[transfer.payer][0]:
            break
    else:
        pytest.fail("the log has no transfer to a capped account to stretch")
    entries[index] = edit_entry(entries[index], minutes=minutes)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert done.status == 1
    assert "ledger.limits" in done.failed()
    assert done.indexes("ledger.limits")[0] == index
    message = done.check("ledger.limits")["failures"][0]["message"]
    assert transfer.payee in message, message
    assert "ceiling" in message, message


def test_resigned_transfer_one_minute_below_a_floor_is_caught_and_names_the_payer(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    before = _replay(entries)
    for index, transfer in transfers(entries):
        limits, balances = before[index]
        floor = limits[transfer.payer][0]
        minutes = balances[transfer.payer] - floor + 1  # the payer ends one minute below its floor
        if limits[transfer.payee][1] is None and 0 < minutes <= MAX_MINUTES:
            break
    else:
        pytest.fail("the log has no transfer to stretch")
    entries[index] = edit_entry(entries[index], minutes=minutes)
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert done.status == 1
    assert "ledger.limits" in done.failed()
    assert done.indexes("ledger.limits")[0] == index
    message = done.check("ledger.limits")["failures"][0]["message"]
    assert transfer.payer in message, message
    assert "floor" in message, message


def test_resigned_limits_that_balances_reach_exactly_pass(
    node: Node, exported: Path, tmp_path: Path, capsys: Capture
) -> None:
    """The other side of the edges: an account at its floor to the minute, and one at its ceiling to the minute."""
    log = copy_export(exported, tmp_path)
    entries = read_entries(log)
    decoded = [entry_decoder.decode(data) for data in entries]
    changed = {e.account for e in decoded if isinstance(e, LimitsChanged)}
    lowest: dict[str, int] = {}
    highest: dict[str, int] = {}
    for _, balances in _replay(entries):
        for account, balance in balances.items():
            lowest[account] = min(lowest.get(account, 0), balance)
            highest[account] = max(highest.get(account, 0), balance)
    opened = {e.account: i for i, e in enumerate(decoded) if isinstance(e, AccountOpened) and e.account not in changed}
    capped = next(a for a in opened if highest[a] > 0)
    floored = next(a for a in opened if lowest[a] < 0 and a != capped)
    entries[opened[capped]] = edit_entry(entries[opened[capped]], floor=min(0, lowest[capped]), ceiling=highest[capped])
    entries[opened[floored]] = edit_entry(entries[opened[floored]], floor=lowest[floored])
    rewrite(log, node.signer, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", node.vkey, "--no-state")
    assert done.check("ledger.limits")["status"] == "pass", done.out
