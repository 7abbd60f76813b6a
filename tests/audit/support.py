"""What the audit tests share: running ``timebank audit`` and rewriting an exported log the way an operator could."""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.ledger.entries import AccountOpened, Transfer, entry_decoder, entry_encoder
from services.node.cli import main
from shared import merkle, tiles
from shared.note import Checkpoint, CosignatureSigner, Signer, add_cosignatures, cosign, format_checkpoint, sign_note


@dataclass
class Audit:
    status: int
    report: dict[str, Any]
    out: str

    def check(self, check_id: str) -> dict[str, Any]:
        for check in self.report["checks"]:
            if check["id"] == check_id:
                return check  # type: ignore[no-any-return]
        raise AssertionError(f"no check {check_id} in {[c['id'] for c in self.report['checks']]}")

    def failed(self) -> set[str]:
        return {c["id"] for c in self.report["checks"] if c["status"] == "fail"}

    def indexes(self, check_id: str) -> list[int]:
        return [f["index"] for f in self.check(check_id)["failures"] if "index" in f]


def audit(capsys: pytest.CaptureFixture[str], tmp: Path, *args: str) -> Audit:
    """Run ``timebank audit`` in this process with a JSON report; ``--state`` defaults to a file under ``tmp``."""
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    extra = [] if "--state" in args or "--no-state" in args else ["--state", str(tmp / "state.json")]
    status = main(["audit", *args, *extra, "--json", str(report), "--quiet"])
    out = capsys.readouterr().out
    return Audit(status, msgspec.json.decode(report.read_bytes()) if report.exists() else {}, out)


# ---- an exported log, as files -------------------------------------------------------------------------------


def read_entries(directory: Path) -> list[bytes]:
    """Every entry of an exported log, in order, from its entry bundles."""
    size = int((directory / "checkpoint").read_text().split("\n")[1])
    out: list[bytes] = []
    for index in range(-(-size // tiles.TILE_WIDTH)):
        width = min(tiles.TILE_WIDTH, size - index * tiles.TILE_WIDTH)
        data = (directory / tiles.entries_path(index, width)).read_bytes()
        p = 0
        while p < len(data):
            (n,) = struct.unpack(">H", data[p : p + 2])
            out.append(data[p + 2 : p + 2 + n])
            p += 2 + n
    return out


def write_bundles(directory: Path, entries: list[bytes], size: int | None = None) -> None:
    """Replace the entry bundles with ``entries``, bundled at the paths a log of ``size`` uses."""
    shutil.rmtree(directory / "tile" / "entries", ignore_errors=True)
    size = len(entries) if size is None else size
    for index in range(-(-size // tiles.TILE_WIDTH)):
        width = min(tiles.TILE_WIDTH, size - index * tiles.TILE_WIDTH)
        chunk = entries[index * tiles.TILE_WIDTH : index * tiles.TILE_WIDTH + width]
        path = directory / tiles.entries_path(index, width)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(struct.pack(">H", len(e)) + e for e in chunk))


def write_tiles(directory: Path, entries: list[bytes]) -> bytes:
    """Replace the hash tiles with those of ``entries`` (built with the appender's RightEdge); return the root."""
    (directory / "tile").mkdir(parents=True, exist_ok=True)
    for level in (directory / "tile").iterdir():
        if level.name != "entries":
            shutil.rmtree(level)
    edge = tiles.RightEdge()
    for entry in entries:
        edge.append(merkle.leaf_hash(entry))
    for level, index, data in edge.take_dirty():
        path = directory / tiles.tile_path(level, index, len(data) // merkle.HASH_SIZE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return edge.root()


def sign_checkpoint(directory: Path, signer: Signer, size: int, root: bytes, *witnesses: CosignatureSigner) -> None:
    body = format_checkpoint(Checkpoint(signer.name, size, root))
    note = sign_note(body, signer)
    if witnesses:
        note = add_cosignatures(note, [cosign(body, w, 1_700_000_000) for w in witnesses])
    (directory / "checkpoint").write_bytes(note)


def rewrite(directory: Path, signer: Signer, entries: list[bytes], *witnesses: CosignatureSigner) -> None:
    """Rewrite history the way an operator holding the key could: new entries, tiles, signed checkpoint."""
    root = write_tiles(directory, entries)
    write_bundles(directory, entries)
    write_balances(directory, entries)
    sign_checkpoint(directory, signer, len(entries), root, *witnesses)


def write_balances(directory: Path, entries: list[bytes]) -> None:
    """Write balances.json as an honest node would serve it for a log of these entries."""
    kinds: dict[str, str] = {}
    balances: dict[str, int] = {}
    for data in entries:
        try:
            entry = entry_decoder.decode(data)
        except msgspec.DecodeError:
            continue  # a test's junk entry moves nothing
        if isinstance(entry, AccountOpened):
            kinds[entry.account] = entry.kind
            balances[entry.account] = 0
        elif isinstance(entry, Transfer) and entry.payer in balances and entry.payee in balances:
            balances[entry.payer] -= entry.minutes
            balances[entry.payee] += entry.minutes
    accounts = [{"id": a, "kind": kinds[a], "balance": b} for a, b in sorted(balances.items())]
    (directory / "balances.json").write_bytes(msgspec.json.encode({"size": len(entries), "accounts": accounts}))


def edit_entry(data: bytes, **changes: Any) -> bytes:
    """The entry with some fields changed, encoded the way the ledger encodes entries."""
    return entry_encoder.encode(msgspec.structs.replace(entry_decoder.decode(data), **changes))


def copy_export(source: Path, tmp: Path) -> Path:
    target = tmp / "export"
    shutil.copytree(source, target)
    return target
