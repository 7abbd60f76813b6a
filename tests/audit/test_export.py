"""`timebank export`: the C2SP tlog-tiles layout plus balances, resumable, audited offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec
import pytest

from services.node.cli import main
from shared import tiles
from tests.audit.conftest import Node, populate
from tests.audit.support import audit

Capture = pytest.CaptureFixture[str]


def files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def size_of(directory: Path) -> int:
    return int((directory / "checkpoint").read_bytes().split(b"\n")[1])


def layout(size: int) -> set[str]:
    """Every path an export of a log of ``size`` entries holds: C2SP tlog-tiles for that size, and the balances."""
    hash_tiles = {tiles.tile_path(level, index, width) for level, index, width in tiles.tile_widths(size)}
    bundles = {
        tiles.entries_path(index, min(tiles.TILE_WIDTH, size - index * tiles.TILE_WIDTH))
        for index in range(-(-size // tiles.TILE_WIDTH))
    }
    return {"checkpoint", "balances.json", *hash_tiles, *bundles}


def test_export_writes_the_tlog_tiles_layout_and_the_balances(node: Node, exported: Path) -> None:
    size = size_of(exported)
    assert files(exported) == layout(size)
    with httpx.Client(base_url=node.url + "/log/") as http:
        for path in sorted(layout(size) - {"checkpoint", "balances.json"}):
            assert (exported / path).read_bytes() == http.get(path).content, path
    balances = msgspec.json.decode((exported / "balances.json").read_bytes())
    assert balances["size"] <= size
    assert sum(a["balance"] for a in balances["accounts"]) == 0


def test_export_again_after_the_log_grew_fetches_only_what_is_new(
    own_node: Node, tmp_path: Path, capsys: Capture
) -> None:
    directory = tmp_path / "log"
    assert main(["export", own_node.url, str(directory), "--quiet"]) == 0
    before = files(directory)
    first_bundle = directory / tiles.entries_path(0)
    stamp = first_bundle.stat().st_mtime_ns
    asyncio.run(populate(own_node.url, members=2, transfers=300, seed=5, run="b"))

    assert main(["export", own_node.url, str(directory), "--quiet"]) == 0
    assert first_bundle.stat().st_mtime_ns == stamp  # kept, not fetched again
    assert files(directory) == layout(size_of(directory))  # the old size's partial tiles are gone
    assert before - files(directory), "the log grew past some partial tiles"
    done = audit(capsys, tmp_path, str(directory), "--vkey", own_node.vkey, "--no-state")
    assert done.status == 0, done.out


def test_directory_without_a_checkpoint_cannot_be_audited(node: Node, tmp_path: Path, capsys: Capture) -> None:
    (tmp_path / "half").mkdir()
    status = main(["audit", str(tmp_path / "half"), "--vkey", node.vkey, "--no-state", "--quiet"])
    assert status == 2
    assert "not a log exported" in capsys.readouterr().err
