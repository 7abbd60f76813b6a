"""``timebank export``: copy a node's public log into a directory that ``timebank audit`` reads offline.

The layout is C2SP tlog-tiles for one checkpoint (so the directory can also be served as a static tiled log),
plus the node's balances:

    checkpoint                  the signed checkpoint note, witness cosignatures included
    tile/<L>/<N>[.p/<W>]        every hash tile of the tree at the checkpoint's size
    tile/entries/<N>[.p/<W>]    every entry bundle (the exact stored entry bytes)
    balances.json               GET /log/balances: every account's balance after its first ``size`` entries

The checkpoint is written last, so a directory without one is an export that did not finish; running the
export again resumes it (bundles and tiles never change once written, so only what is missing is fetched).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.audit.progress import Reporter
from services.audit.source import BALANCES_FILE, CHECKPOINT_FILE, HttpSource, SourceError, write_atomic
from shared import tiles
from shared.note import NoteError, parse_checkpoint


@dataclass(frozen=True)
class Exported:
    size: int
    balances_size: int | None
    missing_tiles: int


def _checkpoint_size(note: bytes) -> int:
    text = note.decode("utf-8", "replace")
    cut = text.rfind("\n\n")
    try:
        return parse_checkpoint(text[: cut + 1]).size
    except NoteError as exc:
        raise SourceError(f"the node's checkpoint cannot be read: {exc}") from None


def _remove_stale_partials(directory: Path, size: int) -> None:
    """Drop partial tiles and bundles of an earlier export that the new checkpoint does not use."""
    tile_root = directory / "tile"
    if not tile_root.is_dir():
        return
    for path in tile_root.rglob("*"):
        if not path.is_file() or not path.parent.name.endswith(".p") or path.name.startswith("."):
            continue
        try:
            where = tiles.parse_tile_path(path.relative_to(directory).as_posix())
        except ValueError:
            continue
        if where.level == "entries":
            expected = min(tiles.TILE_WIDTH, max(0, size - where.index * tiles.TILE_WIDTH))
        else:
            expected = tiles.tile_width(size, where.level, where.index)
        if where.width != expected:
            path.unlink()


def _prepare(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # Until the new checkpoint is written, the directory is an unfinished export, not the old one.
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)


async def export(base_url: str, directory: Path, progress: Reporter) -> Exported:
    """Copy the node's log at its latest checkpoint into ``directory``."""
    _prepare(directory)
    source = HttpSource(base_url, cache=directory)
    try:
        balances = await source.balances()
        note = await source.checkpoint()
        size = _checkpoint_size(note)
        for _ in range(20):
            if balances is None or balances.size <= size:
                break
            await asyncio.sleep(0.1)
            note = await source.checkpoint()
            size = _checkpoint_size(note)
        with progress:
            await source.entries_dir(size, progress.task("entries", size))
            keys = [(level, index, width) for level, index, width in tiles.tile_widths(size)]
            todo = {
                (level, index)
                for level, index, width in keys
                if not (directory / tiles.tile_path(level, index, width)).exists()
            }
            got = await source.hash_tiles(size, todo)
        for (level, index), data in got.items():
            write_atomic(directory / tiles.tile_path(level, index, tiles.tile_width(size, level, index)), data)
        _remove_stale_partials(directory, size)
        if balances is not None:
            write_atomic(directory / BALANCES_FILE, msgspec.json.format(msgspec.json.encode(balances), indent=1))
        else:
            (directory / BALANCES_FILE).unlink(missing_ok=True)
        write_atomic(directory / CHECKPOINT_FILE, note)
        return Exported(size, None if balances is None else balances.size, len(todo) - len(got))
    finally:
        await source.close()
